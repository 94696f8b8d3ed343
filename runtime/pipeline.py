"""Decode/preprocess in worker threads, infer on one thread, deliver results in input order.

A producer thread walks the Source and submits each item to a thread pool; the futures go into a
bounded queue in submission order, so the consumer (the calling thread, which runs inference)
gets results in order while up to `queue_size` items are being decoded ahead. OpenCV and the
runtimes release the GIL, so throughput approaches the slowest stage rather than the sum.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeproof.runtime.preprocess import ImageReadError, prepare, read_image
from edgeproof.runtime.sources import Item, Source

_END = object()


class _StopRequested(Exception):
    """on_result returned False (e.g. the user pressed q in the --show window)."""


@dataclass
class Result:
    index: int
    name: str
    topk: list[tuple[str, float]]
    scores: np.ndarray
    latency_ms: float  # inference time per image (batch time / batch size)
    frame: np.ndarray | None = None  # BGR original, only when keep_frames


@dataclass
class Summary:
    source: str
    kind: str
    count: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    preprocess_ms: list[float] = field(default_factory=list, repr=False)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    stopped: str | None = None
    interrupted: bool = False

    @property
    def fps(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0

    def pct(self, values: list[float], q: float) -> float | None:
        return float(np.percentile(values, q)) if values else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source, "kind": self.kind, "count": self.count, "seconds": round(self.seconds, 4),
            "fps": round(self.fps, 2),
            "p50_ms": _r(self.pct(self.latencies_ms, 50)), "p90_ms": _r(self.pct(self.latencies_ms, 90)),
            "p50_preprocess_ms": _r(self.pct(self.preprocess_ms, 50)),
            "skipped": [{"input": n, "why": w} for n, w in self.skipped],
            "stopped": self.stopped, "interrupted": self.interrupted,
        }


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


def _decode(item: Item, pp, keep_frame: bool) -> tuple[Item, np.ndarray | None, np.ndarray | None, str | None, float]:
    t = time.perf_counter()
    try:
        bgr = item.frame if item.frame is not None else read_image(item.path)
        x = prepare(bgr, pp)
    except ImageReadError as exc:
        return item, None, None, str(exc), 0.0
    except Exception as exc:  # a corrupt frame or odd file must not kill the run
        return item, None, None, f"{type(exc).__name__}: {exc}", 0.0
    return item, x, (bgr if keep_frame else None), None, (time.perf_counter() - t) * 1e3


def run_pipeline(model, source: Source, on_result: Callable[[Result], None], batch: int = 1, top_k: int = 5,
                 workers: int | None = None, queue_size: int | None = None, keep_frames: bool = False,
                 limit: int | None = None) -> Summary:
    """Run `model` over `source`, calling `on_result` in input order; returns the Summary.

    on_result returning False stops the run (stop reason "stopped by the user").

    Ctrl-C (KeyboardInterrupt in this thread, also when raised by on_result) ends the run cleanly:
    the summary is returned with interrupted=True.
    """
    batch = max(1, int(batch))
    workers = workers or max(1, min(4, (os.cpu_count() or 2)))
    q: queue.Queue = queue.Queue(maxsize=queue_size or max(4, 2 * workers + batch))
    stop = threading.Event()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="edgeproof-decode")
    pp = model.preprocess
    summary = Summary(source=source.spec, kind=source.kind)
    failure: list[BaseException] = []

    def put(obj) -> bool:
        while not stop.is_set():
            try:
                q.put(obj, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in source:
                if stop.is_set() or not put(pool.submit(_decode, item, pp, keep_frames)):
                    break
        except BaseException as exc:  # surfaced in the consumer thread
            failure.append(exc)
        finally:
            while True:  # the end marker must get through even when the queue is full
                try:
                    q.put(_END, timeout=0.1)
                    break
                except queue.Full:
                    if stop.is_set():
                        break

    producer = threading.Thread(target=produce, name="edgeproof-source", daemon=True)
    pending: list[tuple[Item, np.ndarray, np.ndarray | None]] = []

    def flush() -> None:
        if not pending:
            return
        x = np.stack([p[1] for p in pending]) if len(pending) > 1 else pending[0][1][None]
        t = time.perf_counter()
        scores = model.predict(x)
        per = (time.perf_counter() - t) * 1e3 / len(pending)
        tops = model.topk(scores, top_k)
        done = list(pending)
        pending.clear()
        for (item, _, bgr), top, row in zip(done, tops, scores):
            summary.count += 1
            summary.latencies_ms.append(per)
            if on_result(Result(item.index, item.name, top, row, per, bgr)) is False:
                raise _StopRequested

    t0 = time.perf_counter()
    producer.start()
    try:
        while limit is None or summary.count + len(pending) < limit:
            obj = q.get()
            if obj is _END:
                break
            item, x, bgr, why, pre_ms = obj.result() if isinstance(obj, Future) else obj
            if why is not None:
                summary.skipped.append((item.name, why))
                continue
            summary.preprocess_ms.append(pre_ms)
            pending.append((item, x, bgr))
            if len(pending) >= batch:
                flush()
        flush()
        if failure:
            raise failure[0]
    except KeyboardInterrupt:
        summary.interrupted = True
    except _StopRequested:
        source.stop_reason = "stopped by the user"
    finally:
        stop.set()
        _drain(q)
        pool.shutdown(wait=False, cancel_futures=True)
        producer.join(timeout=2.0)
        source.close()
        summary.seconds = time.perf_counter() - t0
    if limit is not None and summary.count >= limit:
        summary.stopped = f"limit of {limit} reached"
    elif summary.interrupted:
        summary.stopped = "interrupted (Ctrl-C)"
    else:
        summary.stopped = source.stop_reason
    return summary


def _drain(q: queue.Queue) -> None:
    while True:
        try:
            obj = q.get_nowait()
        except queue.Empty:
            return
        if isinstance(obj, Future):
            obj.cancel()
