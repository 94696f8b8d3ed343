"""Dynamic batching in front of one or more interpreters, each called by one thread at a time.

Requests put jobs (an NHWC array of n >= 1 images: float32 in model-input space, or a quantized
model's own integer input) on one queue. Each replica (a loaded Model with its own interpreter and
thread) takes the first job, then keeps taking jobs of the same dtype until it holds `max_batch` images
or `batch_timeout` has passed since it took the first one (Triton's max_queue_delay), and runs them as
one call of the runtime's per-image Session (runtime.per_image: the watchdog, then Model.predict, or
Model.predict_native for integer input with no float round trip). It waits only while other requests are
still being decoded, so a lone request never pays the timeout; a lone request that finds an idle
interpreter even runs on its decode thread (under that interpreter's lock), saving a thread hand-off.
Each interpreter's lock is held around every call, so inference never runs concurrently on one
interpreter; parallelism comes from several replicas (`--workers`) or the backend's threads.

A backend that cannot batch (fixed batch dimension) gets max_batch 1. An inference call that outlives
the watchdog limit fails its requests with 503 and marks the server not ready: native code cannot be
interrupted, so that replica is written off (its thread stays blocked) and a supervisor should restart
the process; the other replicas keep serving. The queue is bounded (503 when full): memory stays flat.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from dataclasses import dataclass

import numpy as np

from edgeproof.errors import EdgeproofError, UsageError

log = logging.getLogger(__name__)


class Unavailable(Exception):
    """The request cannot be served now (503): queue full, or no healthy interpreter left."""


@dataclass
class Result:
    probs: np.ndarray  # (n, C) float32
    queue_s: float
    infer_s: float
    batch_size: int  # images in the inference call this job rode in


class _Job:
    __slots__ = ("x", "n", "future", "enqueued")

    def __init__(self, x: np.ndarray, future: asyncio.Future) -> None:
        self.x, self.n, self.future, self.enqueued = x, len(x), future, time.perf_counter()


_STOP = object()


class Engine:
    def __init__(self, models: list, max_batch: int = 8, batch_timeout_ms: float = 0.0, max_queue: int = 256,
                 infer_timeout: float = 60.0, metrics=None) -> None:
        if not models:
            raise ValueError("Engine needs at least one model")
        self.models = models
        self.can_batch = all(m.backend.batch_ok for m in models)
        self.max_batch = max_batch if self.can_batch else 1
        self.batch_timeout = batch_timeout_ms / 1000.0
        self.max_queue = max_queue
        self.infer_timeout = infer_timeout
        self.metrics = metrics
        self.not_ready_reason: str | None = "starting"
        self._queue: queue.Queue = queue.Queue()
        self._queued = 0  # images waiting or running; touched on the event loop only
        self.incoming = 0  # requests being decoded, soon to be queued (the batcher waits only for these)
        self._incoming_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._replicas: list[_Replica] = []

    @property
    def model(self):
        return self.models[0]

    @property
    def ready(self) -> bool:
        return self.not_ready_reason is None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._replicas = [_Replica(self, m, i) for i, m in enumerate(self.models)]
        for r in self._replicas:
            r.thread.start()
        self.not_ready_reason = None

    def stop(self, timeout: float = 5.0) -> None:
        """After the last request: stop the threads and close the interpreters (not the hung ones)."""
        if self.not_ready_reason is None:
            self.not_ready_reason = "shutting down"
        for _ in self._replicas:
            self._queue.put(_STOP)
        for r in self._replicas:
            if not r.dead:
                r.thread.join(timeout)
                r.close()

    async def infer(self, x: np.ndarray) -> Result:
        """x: float32 (n, H, W, C) in model-input space -> probabilities, through the batcher."""
        return await self.infer_from(len(x), lambda: x)

    async def infer_from(self, n: int, make_x, pool=None) -> Result:
        """Like infer, for a batch of n images that `make_x()` decodes in `pool`; the decode thread queues the
        job itself (one thread hand-off fewer than returning to the event loop first). make_x's exceptions
        (a bad image) propagate before anything is queued."""
        if self._alive() == 0:
            raise Unavailable(f"no healthy interpreter ({self.not_ready_reason}); restart the server")
        if self._queued + n > self.max_queue and self._queued > 0:
            raise Unavailable(f"server busy: {self._queued} image(s) already queued (--max-queue {self.max_queue}); "
                              "retry shortly")
        loop = self._loop or asyncio.get_running_loop()
        fut = loop.create_future()
        self._queued += n
        try:
            if pool is None:
                self._queue.put(_Job(make_x(), fut))
            else:  # decode errors come back through fut too: one event-loop wake-up per request
                self._incoming(+1)
                pool.submit(self._decode_and_queue, make_x, fut)
            return await fut
        finally:
            self._queued -= n

    def _incoming(self, delta: int) -> None:
        with self._incoming_lock:
            self.incoming += delta

    def _decode_and_queue(self, make_x, fut: asyncio.Future) -> None:
        answers: list[tuple[asyncio.Future, object]] = []
        try:
            try:
                job = _Job(make_x(), fut)
            except BaseException as exc:  # noqa: BLE001 - a bad image (400) or anything else: the request's
                answers = [(fut, exc)]
                return
            # Nothing queued and nobody to batch with: run it on this thread if an interpreter is free (its lock
            # still keeps one call at a time), saving the hand-off to the replica thread.
            if self._queue.empty() and (self.max_batch == 1 or self.incoming == 1):
                for r in self._replicas:
                    if not r.dead and r.lock.acquire(blocking=False):
                        try:
                            answers = r._run([job])
                        finally:
                            r.lock.release()
                        return
            self._queue.put(job)
        finally:
            self._incoming(-1)
            self._deliver_all(answers)  # last: the event loop takes over (and wants the GIL) from here

    @property
    def hung(self) -> int:
        """Interpreters written off by the watchdog (their threads are still blocked in native code)."""
        return sum(r.dead for r in self._replicas)

    def _alive(self) -> int:
        return sum(not r.dead for r in self._replicas)

    # ---- called from replica / watchdog threads
    def _deliver(self, job: _Job, value) -> None:
        self._set(job.future, value)

    def _deliver_all(self, answers: list[tuple[asyncio.Future, object]]) -> None:
        for fut, value in answers:
            self._set(fut, value)

    def _set(self, fut: asyncio.Future, value) -> None:
        """Complete `fut` (result or exception) on the event loop, from any thread; a cancelled one is left alone."""
        def done() -> None:
            if not fut.done():
                if isinstance(value, BaseException):
                    fut.set_exception(value)
                else:
                    fut.set_result(value)

        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(done)

    def _replica_hung(self, replica: _Replica, jobs: list[_Job], seconds: float) -> None:
        replica.dead = True
        m = replica.model
        self.not_ready_reason = (f"an inference call on {m.path.name} ({m.backend_name}) did not finish within "
                                 f"{seconds:g} s")
        log.error("%s; that interpreter is written off (the model may loop forever, or the accelerator hung); "
                  "restart the server, re-convert the model, or raise --infer-timeout", self.not_ready_reason)
        if self.metrics is not None:
            self.metrics.watchdog_timeouts.inc()
            self.metrics.ready.set(0)
        err = Unavailable(f"inference did not finish within {seconds:g} s; the server is not ready")
        for job in jobs:
            self._deliver(job, err)
        if self._alive() == 0:  # nobody will take what is queued: fail it now instead of never
            while True:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is not _STOP:
                    self._deliver(job, Unavailable(f"no healthy interpreter ({self.not_ready_reason})"))


class _Replica:
    """One Model, one thread: the only caller of that model's predict()."""

    def __init__(self, engine: Engine, model, index: int) -> None:
        self.engine, self.model, self.index = engine, model, index
        self.dead = False
        self.lock = threading.Lock()  # held around every call on this model: never two at once
        self._current: list[_Job] = []
        self._dog = None
        if engine.infer_timeout:
            from edgeproof.runtime.watchdog import Watchdog

            self._dog = Watchdog(engine.infer_timeout, self._on_timeout)
        from edgeproof.runtime.per_image import Session

        self.session = Session(model, watchdog=self._dog)
        self.thread = threading.Thread(target=self._loop, name=f"edgeproof-infer-{index}", daemon=True)

    def _on_timeout(self, what: str, seconds: float) -> None:
        self.engine._replica_hung(self, list(self._current), seconds)

    def close(self) -> None:
        if self._dog is not None:
            self._dog.close()
        self.model.close()

    def _collect(self, first: _Job) -> tuple[list[_Job], _Job | None]:
        """`first` plus whatever fits in max_batch within the batch timeout; a job that does not fit is carried."""
        eng = self.engine
        batch, n = [first], first.n
        deadline = time.perf_counter() + eng.batch_timeout
        q = eng._queue
        while n < eng.max_batch:
            try:
                job = q.get_nowait()
            except queue.Empty:
                # Wait for more only while some request is still being decoded: a lone request runs at once.
                left = deadline - time.perf_counter()
                if left <= 0 or eng.incoming <= 0:
                    break
                try:
                    job = q.get(timeout=min(left, 0.0005))
                except queue.Empty:
                    continue
            if job is _STOP:
                q.put(_STOP)
                break
            if n + job.n > eng.max_batch or job.x.dtype != first.x.dtype:  # a float and a native batch never mix
                return batch, job
            batch.append(job)
            n += job.n
        return batch, None

    def _warm_up(self) -> None:
        """One call on zeros before the first request (first calls allocate), under the watchdog like any call."""
        try:
            pp = self.model.preprocess
            self.session.infer(np.zeros((1, pp.height, pp.width, pp.channels), np.float32), "the warm-up call")
        except Exception as exc:  # noqa: BLE001 - real requests will meet and report a real failure
            log.warning("warm-up inference on %s failed: %s", self.model.path.name, exc)

    def _loop(self) -> None:
        eng, carry = self.engine, None
        with self.lock:
            self._warm_up()
        while not self.dead:
            job = carry if carry is not None else eng._queue.get()
            carry = None
            if job is _STOP:
                return
            batch, carry = self._collect(job)
            with self.lock:
                answers = self._run(batch)
            eng._deliver_all(answers)
        if carry is not None:  # written off while holding a job: hand it to a healthy replica
            eng._queue.put(carry)

    def _predict(self, x: np.ndarray) -> np.ndarray:
        step = max(self.engine.max_batch, 1)
        if len(x) <= step:
            return self.session.infer(x, f"a batch of {len(x)}")
        return np.concatenate([self.session.infer(x[i:i + step], f"a batch of {len(x[i:i + step])}")
                               for i in range(0, len(x), step)])

    def _run(self, batch: list[_Job]) -> list[tuple[asyncio.Future, object]]:
        """One inference call for the batch -> (future, Result or exception) to deliver, which the caller does after
        releasing the interpreter's lock and its own bookkeeping (a delivery wakes the event loop)."""
        eng = self.engine
        t0 = time.perf_counter()
        self._current = batch
        x = batch[0].x if len(batch) == 1 else np.concatenate([j.x for j in batch])
        try:
            probs = self._predict(x)
        except Exception as exc:  # noqa: BLE001 - handed to the request; the replica keeps serving
            self._current = []
            if self.dead:
                return []
            if len(batch) > 1:  # one request's input must not fail its neighbours: run them alone
                return [answer for job in batch for answer in self._run([job])]
            return [(batch[0].future, exc if isinstance(exc, EdgeproofError) else
                     UsageError(f"inference failed: {type(exc).__name__}: {exc}"))]
        self._current = []
        if self.dead:  # the watchdog already answered these requests with 503
            return []
        infer_s = time.perf_counter() - t0
        if eng.metrics is not None:
            eng.metrics.observe_batch(len(x), infer_s, [t0 - j.enqueued for j in batch])
        answers, i = [], 0
        for job in batch:
            answers.append((job.future, Result(probs[i:i + job.n], t0 - job.enqueued, infer_s, len(x))))
            i += job.n
        return answers
