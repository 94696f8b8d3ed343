"""The per-image work every engine shares: decode + preprocess one input, classify a batch.

The local pipeline's threads (runtime.pipeline), each Ray actor (edgeproof.scaleout.ray_run),
run_session's callers and each of the server's interpreters (edgeproof.serve.engine) go through one
`Session` over one loaded model, so a bad file gets the same skip reason and an image the same scores
whichever engine ran it.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from typing import TYPE_CHECKING

import numpy as np

from edgeproof.runtime.preprocess import ImageReadError, pixels, prepare, read_image, wants_alpha
from edgeproof.runtime.sources import Item

if TYPE_CHECKING:  # pragma: no cover
    from edgeproof.runtime.model import Model
    from edgeproof.runtime.watchdog import Watchdog

Decoded = tuple[Item, np.ndarray | None, np.ndarray | None, str | None, float]


def decode_item(item: Item, pp, keep_frame: bool, max_pixels: int | None = None, as_pixels: bool = False) -> Decoded:
    """One input -> (item, x, kept frame, skip reason, decode+preprocess ms); never raises for a bad file. x is
    float32 model input (preprocess.prepare), or with `as_pixels` the uint8 pixels before normalization
    (preprocess.pixels) for a model that quantizes them by an integer op (Model.takes_pixels)."""
    if item.error is not None:  # the source already knows why this input cannot be delivered
        return item, None, None, item.error, 0.0
    t = time.perf_counter()
    try:
        bgr = item.frame if item.frame is not None else read_image(item.path, max_pixels, wants_alpha(pp))
        x = pixels(bgr, pp) if as_pixels else prepare(bgr, pp)
        if bgr.ndim == 3 and bgr.shape[2] == 4:  # a 4-channel model's alpha: the kept frame is drawn on as BGR
            bgr = bgr[:, :, :3]
    except ImageReadError as exc:
        return item, None, None, str(exc), 0.0
    except Exception as exc:  # noqa: BLE001 - a corrupt frame or odd file is a skip with its reason
        return item, None, None, f"{type(exc).__name__}: {exc}", 0.0
    finally:
        item.frame = None  # the captured frame lives on only as bgr, and only when kept
    return item, x, (bgr if keep_frame else None), None, (time.perf_counter() - t) * 1e3


class Session:
    """One loaded model and the per-image work of every engine."""

    def __init__(self, model: Model, top_k: int = 5, watchdog: Watchdog | None = None,
                 max_pixels: int | None = None) -> None:
        self.model, self.top_k, self.watchdog, self.max_pixels = model, top_k, watchdog, max_pixels

    def decode(self, item: Item, keep_frame: bool = False) -> Decoded:
        """(item, x: model input, or uint8 pixels where the model takes them, kept frame, skip reason,
        decode+preprocess ms); never raises for a bad input."""
        return decode_item(item, self.model.preprocess, keep_frame, self.max_pixels, self.model.takes_pixels)

    def infer(self, x: np.ndarray, what: str) -> np.ndarray:
        """A batch -> scores, under the watchdog (`what` names the batch for it). x is float32 in model-input
        space, or the quantized model's own integer input (Model.native_dtype), which skips the float round trip."""
        native = x.dtype != np.float32 and x.dtype.name == self.model.native_dtype
        with self._watch(what):
            return self.model.predict_native(x) if native else self.model.predict(x)

    def _watch(self, what: str):
        return self.watchdog.watch(what) if self.watchdog is not None else nullcontext()

    def classify(self, x: np.ndarray, what: str) -> tuple[np.ndarray, list[list[tuple[str, float]]], float]:
        """A batch of decode()'s inputs (uint8 pixels or float32 model input) -> (scores, top-k per row, inference
        ms per image); `what` names the batch for the watchdog."""
        t = time.perf_counter()
        if x.dtype == np.uint8:  # decode's pixels (a uint8 model's native input goes through infer, never here)
            with self._watch(what):
                scores = self.model.predict_pixels(x)
        else:
            scores = self.infer(x, what)
        per = (time.perf_counter() - t) * 1e3 / len(x)
        return scores, self.model.topk(scores, self.top_k), per
