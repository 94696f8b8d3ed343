"""What the routes share: the engine, the decode pool, metrics, settings, the card; and error mapping.

Every failure a route meets becomes one HttpError (status + one-line message), answered as
`{"error": "..."}` by the app's handler: bad images 400 with the runtime's reason, a full queue or
a hung interpreter 503, a model that fails on a valid input 500. The server stays up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field

from edgeproof.errors import EdgeproofError, UsageError
from edgeproof.serve.engine import Engine, Result, Unavailable
from edgeproof.serve.images import BadImage, prepare_all
from edgeproof.serve.limits import Budget, Busy
from edgeproof.serve.pool import LifoPool

log = logging.getLogger(__name__)


class HttpError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def forget_traceback(exc: BaseException) -> None:
    """Drop the frames an answered error holds: an exception that passed through an asyncio future is in a
    reference cycle (exception -> traceback -> frame -> future -> exception) with the request body in those
    frames, which only the cyclic GC frees, late: 40 concurrent 7 MiB bodies left ~43 MB held."""
    seen = 0
    while exc is not None and seen < 8:
        exc.__traceback__ = None
        exc, seen = exc.__context__ or exc.__cause__, seen + 1


@dataclass
class Service:
    engine: Engine
    config: object  # ServeConfig
    metrics: object  # ModelMetrics
    name: str
    card: dict = field(default_factory=dict)
    pool: Executor | None = None
    budget: Budget | None = None
    version: str = "1"
    metadata: dict = field(default_factory=dict)
    active: int = 0  # requests inside classify/infer (event loop only)
    closing: bool = False  # being unloaded: new requests get 503

    def __post_init__(self) -> None:
        if self.budget is None:
            self.budget = Budget(self.config.max_inflight)
        if self.pool is None:
            self.pool = LifoPool(self.config.decode_threads, thread_name_prefix="edgeproof-decode")
        m = self.model
        self.model_ref = {"name": self.name, "format": m.format, "backend": m.backend_name}

    @property
    def model(self):
        return self.engine.model

    async def classify(self, items: list[tuple[str, bytes]]) -> Result:
        """Encoded images -> probabilities: decoded and checked in the pool, then batched."""
        pp = self.model.preprocess
        limit, budget = self.config.max_pixels, self.budget
        return await self._call(self.engine.infer_from(len(items), lambda: prepare_all(items, pp, limit, budget),
                                                       self.pool))

    async def infer(self, x) -> Result:
        """A float32 batch already in model-input space -> probabilities."""
        return await self._call(self.engine.infer(x))

    async def drain(self, timeout: float) -> None:
        """Take no new requests; wait (up to `timeout` s) for those in flight, before the engine stops."""
        self.closing = True
        deadline = time.monotonic() + timeout
        while self.active and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    async def _call(self, awaitable) -> Result:
        if self.closing:
            awaitable.close()
            raise HttpError(503, f"model '{self.name}' is being unloaded; retry shortly", {"retry-after": "1"})
        t0, failure = time.perf_counter(), None
        triton = self.metrics.triton
        triton.add("nv_inference_pending_request_count", 1)
        self.active += 1
        try:
            return await awaitable
        except BadImage as exc:  # 400 with the runtime's reason, counted by reason
            failure = "OTHER"
            self.metrics.rejected.labels(exc.reason[:60]).inc()
            raise HttpError(400, f"{exc.which}: {exc.reason}; send a whole JPEG, PNG, WebP, BMP or TIFF "
                                 "image") from None
        except (Unavailable, Busy) as exc:
            failure = "REJECTED" if self.engine.ready else "BACKEND"
            raise HttpError(503, str(exc), {"retry-after": "1"}) from None
        except UsageError as exc:  # e.g. a bad EDGEPROOF_MAX_IMAGE_PIXELS met at the first image
            failure = "OTHER"
            raise HttpError(400, str(exc)) from None
        except EdgeproofError as exc:
            failure = "BACKEND"
            log.error("inference failed: %s", exc)
            raise HttpError(500, f"inference failed: {exc}") from None
        except BaseException:  # cancelled (the client went away)
            failure = "OTHER"
            raise
        finally:
            self.active -= 1
            triton.add("nv_inference_pending_request_count", -1)
            self.metrics.observe_inference(time.perf_counter() - t0, failure)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
