"""Decode/preprocess in worker threads, infer on one thread, deliver results in input order.

A producer thread walks the Source and appends each item to a small ordered buffer; decode workers
take the oldest undecoded entry, and the consumer (the calling thread, which runs inference) takes
entries from the front once decoded, so results come out in input order while up to `queue_size`
items are decoded ahead. OpenCV and the runtimes release the GIL, so throughput approaches the
slowest stage rather than the sum.

Long runs: nothing grows with the number of frames. The buffer is bounded; when it is full a file
or video source waits (backpressure, nothing lost), while a live source (camera, device, stream,
picam: `source.live`) never waits: the oldest frame not yet being decoded (else the oldest) is
dropped and counted in Summary.dropped, so results stay fresh. Frames alive at once are at most
queue_size + workers + batch + 3 (buffer, orphaned decodes, pending batch, one in hand at the
source, producer and consumer). Summary keeps latencies in a fixed-size histogram and the first
SKIP_EXAMPLES skipped inputs (plus counts).
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeproof.runtime.per_image import Decoded, Session
from edgeproof.runtime.running_stats import LogHistogram
from edgeproof.runtime.sources import Item, Source, StopReason

SKIP_EXAMPLES = 100  # skipped inputs listed by name; the rest are only counted
MAX_REASONS = 50  # distinct skip reasons counted by name; later new ones go under OTHER_REASON
OTHER_REASON = "other reasons"
JOIN_TIMEOUT = 2.0  # seconds the run waits for its threads when it ends (a stalled read may take longer)


class _StopRequested(Exception):
    """on_result returned False (e.g. the user pressed q in the --show window)."""


@dataclass
class Result:
    """One classified input: its top-k, all scores, inference ms, and the frame when it is kept."""
    index: int
    name: str
    topk: list[tuple[str, float]]
    scores: np.ndarray
    latency_ms: float  # inference time per image (batch time / batch size)
    frame: np.ndarray | None = None  # BGR original, only when keep_frames


@dataclass
class Summary:
    """What a run did: counts, timings, skips and why it stopped."""
    source: str
    kind: str
    count: int = 0
    seconds: float = 0.0
    latencies_ms: LogHistogram = field(default_factory=LogHistogram, repr=False)
    preprocess_ms: LogHistogram = field(default_factory=LogHistogram, repr=False)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (name, why): the first SKIP_EXAMPLES only
    skipped_total: int = 0
    skipped_by_reason: dict[str, int] = field(default_factory=dict)
    dropped: int = 0  # live frames dropped because inference was slower than capture
    stopped: str | None = None  # why the run ended (StopReason words, or the source's own stop_reason)
    interrupted: bool = False
    terminated: bool = False  # the interruption was SIGTERM (runtime.stop_signals), not Ctrl-C
    source_lost: bool = False  # the run ended because the camera/stream died (not at a limit or by the user)
    model: dict[str, Any] | None = None  # path, format, backend, placement (runtime.session.run_session)
    engine: dict[str, Any] | None = None  # the figures of an engine other than the local one (Ray)

    @property
    def fps(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0

    def skip(self, name: str, why: str) -> None:
        """Count a skipped input; keep its name only while fewer than SKIP_EXAMPLES are listed."""
        self.skipped_total += 1
        if len(self.skipped) < SKIP_EXAMPLES:
            self.skipped.append((name, why))
        key = why if why in self.skipped_by_reason or len(self.skipped_by_reason) < MAX_REASONS else OTHER_REASON
        self.skipped_by_reason[key] = self.skipped_by_reason.get(key, 0) + 1

    def pct(self, values: LogHistogram | list[float], q: float) -> float | None:
        if isinstance(values, LogHistogram):
            return values.quantile(q)
        return float(np.percentile(values, q)) if len(values) else None

    def to_dict(self) -> dict[str, Any]:
        by_reason = dict(sorted(self.skipped_by_reason.items(), key=lambda kv: -kv[1]))
        return {
            "source": self.source, "kind": self.kind, "count": self.count, "seconds": round(self.seconds, 4),
            "fps": round(self.fps, 2),
            "p50_ms": _r(self.pct(self.latencies_ms, 50)), "p90_ms": _r(self.pct(self.latencies_ms, 90)),
            "p99_ms": _r(self.pct(self.latencies_ms, 99)),
            "p50_preprocess_ms": _r(self.pct(self.preprocess_ms, 50)),
            "skipped": [{"input": n, "why": w} for n, w in self.skipped],
            "skipped_total": self.skipped_total, "skipped_by_reason": by_reason, "dropped": self.dropped,
            "stopped": self.stopped, "interrupted": self.interrupted, "source_lost": self.source_lost,
            **({"engine": self.engine} if self.engine is not None else {}),
            **({"model": self.model} if self.model is not None else {}),
        }


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


_QUEUED, _DECODING, _DONE = 0, 1, 2


class _Entry:
    __slots__ = ("item", "state", "out")

    def __init__(self, item: Item) -> None:
        self.item: Item | None = item
        self.state = _QUEUED
        self.out: Decoded | None = None


class _Buffer:
    """The bounded, ordered hand-over between the source, the decode workers and inference."""

    def __init__(self, cap: int, live: bool) -> None:
        self.cap, self.live = cap, live
        self.entries: deque[_Entry] = deque()
        self.cond = threading.Condition()
        self.ended = False  # the source has no more items
        self.stopped = False  # the run is over: everyone leaves
        self.dropped = 0

    def put(self, item: Item) -> bool:
        """Producer: append `item`; a file source waits while the buffer is full, a live one drops."""
        with self.cond:
            while len(self.entries) >= self.cap and not self.stopped:
                if self.live:
                    victim = next((e for e in self.entries if e.state == _QUEUED), self.entries[0])
                    self.entries.remove(victim)
                    victim.item = None
                    self.dropped += 1
                    break
                self.cond.wait(0.1)
            if self.stopped:
                return False
            self.entries.append(_Entry(item))
            self.cond.notify_all()
            return True

    def claim(self) -> tuple[_Entry, Item] | None:
        """Worker: the oldest entry not yet decoded, or None when there will be no more."""
        with self.cond:
            while not self.stopped:
                for e in self.entries:
                    if e.state == _QUEUED and e.item is not None:
                        e.state = _DECODING
                        return e, e.item
                if self.ended:
                    return None
                self.cond.wait(0.1)
            return None

    def done(self, entry: _Entry, out: Decoded) -> None:
        with self.cond:
            entry.out, entry.state, entry.item = out, _DONE, None
            self.cond.notify_all()

    def take(self) -> Decoded | None:
        """Consumer: the next result in input order, or None at the end of the source (or of the run: close)."""
        with self.cond:
            while True:
                if self.entries and self.entries[0].state == _DONE:
                    out = self.entries.popleft().out
                    self.cond.notify_all()
                    return out
                if self.stopped or (self.ended and not self.entries):
                    return None
                self.cond.wait(0.1)

    def finish(self) -> None:
        with self.cond:
            self.ended = True
            self.cond.notify_all()

    def close(self) -> None:
        with self.cond:
            self.stopped = True
            self.entries.clear()
            self.cond.notify_all()


def run_pipeline(model, source: Source, on_result: Callable[[Result], None], batch: int = 1, top_k: int = 5,
                 workers: int | None = None, queue_size: int | None = None, keep_frames: bool = False,
                 limit: int | None = None, watchdog=None) -> Summary:
    """Run `model` over `source`, calling `on_result` in input order; returns the Summary.

    watchdog: a runtime.watchdog.Watchdog armed around every inference call (a model that never returns).

    on_result returning False stops the run (stop reason "stopped by the user").

    Ctrl-C (KeyboardInterrupt in this thread, also when raised by on_result) ends the run cleanly:
    the summary is returned with interrupted=True.
    """
    batch = max(1, int(batch))
    workers = workers or max(1, min(4, (os.cpu_count() or 2)))
    buf = _Buffer(queue_size or max(4, 2 * workers + batch), source.live)
    session = Session(model, top_k, watchdog, source.max_pixels)
    summary = Summary(source=source.spec, kind=source.kind)
    failure: list[BaseException] = []

    # Who releases the source: the consumer, unless the producer is still inside a read when the run
    # ends (a stalled stream); releasing a capture under a read in another thread can crash OpenCV, so
    # then the producer releases it once the read returns.
    handoff = threading.Lock()
    producer_done, close_in_producer = [False], [False]

    def produce() -> None:
        try:
            for item in source:
                if not buf.put(item):
                    break
        except BaseException as exc:  # noqa: BLE001 - surfaced in the consumer thread
            failure.append(exc)
        finally:
            buf.finish()
            with handoff:
                producer_done[0] = True
                close_here = close_in_producer[0]
            if close_here:
                source.close()

    def decode_loop() -> None:
        try:
            while (claimed := buf.claim()) is not None:
                entry, item = claimed
                out: Decoded = (item, None, None, "decode worker failed", 0.0)
                try:
                    out = session.decode(item, keep_frames)
                finally:  # the consumer waits for this entry: it must be marked done whatever happened
                    buf.done(entry, out)
                del entry, item, claimed, out  # hold no frame while waiting for the next one
        except BaseException as exc:  # noqa: BLE001 - surfaced in the consumer thread, as the producer's are
            # decode never raises for a bad input (decode_item); this is a defect, and a dead worker would leave
            # its share of the buffer unclaimed and the consumer waiting for ever: stop the run and raise it
            failure.append(exc)
            buf.close()

    if source.kind == "image":  # one image file: decode it in this thread, no producer or decode threads
        decoded = (session.decode(item, keep_frames) for item in source)
        take: Callable[[], Decoded | None] = lambda: next(decoded, None)
        threads: list[threading.Thread] = []
        producer_done[0] = True  # the consumer releases the source
    else:
        take = buf.take
        threads = [threading.Thread(target=produce, name="edgeproof-source", daemon=True)]
        threads += [threading.Thread(target=decode_loop, name=f"edgeproof-decode-{i}", daemon=True)
                    for i in range(workers)]
    pending: list[tuple[Item, np.ndarray, np.ndarray | None]] = []

    def flush() -> None:
        if not pending:
            return
        x = np.stack([p[1] for p in pending]) if len(pending) > 1 else pending[0][1][None]
        scores, tops, per = session.classify(x, pending[0][0].name)
        done = list(pending)
        pending.clear()
        for (item, _, bgr), top, row in zip(done, tops, scores):
            summary.count += 1
            summary.latencies_ms.add(per)
            if on_result(Result(item.index, item.name, top, row, per, bgr)) is False:
                raise _StopRequested

    t0 = time.perf_counter()
    for t in threads:
        t.start()
    try:
        while limit is None or summary.count + len(pending) < limit:
            out = take()
            if out is None:
                break
            item, x, bgr, why, pre_ms = out
            del out
            if why is not None:
                summary.skip(item.name, why)
                continue
            summary.preprocess_ms.add(pre_ms)
            pending.append((item, x, bgr))
            del item, x, bgr
            if len(pending) >= batch:
                flush()
        flush()
        if failure:
            raise failure[0]
    except KeyboardInterrupt as exc:
        from edgeproof.runtime.stop_signals import Terminated

        summary.interrupted = True
        summary.terminated = isinstance(exc, Terminated)
    except _StopRequested:
        source.stop_reason = StopReason.BY_USER
    finally:
        buf.close()
        pending.clear()
        for t in threads:
            t.join(timeout=JOIN_TIMEOUT)
        with handoff:
            close_in_producer[0] = not producer_done[0]
        if not close_in_producer[0]:
            source.close()
        summary.seconds = time.perf_counter() - t0
        summary.dropped = buf.dropped
    summary.stopped = stop_reason(summary, limit, source)
    return summary


def stop_reason(summary: Summary, limit: int | None, source: Source) -> str | None:
    """Why a run ended (Summary.stopped), the same words for every engine; sets Summary.source_lost too."""
    if limit is not None and summary.count >= limit:
        return StopReason.limit(limit)
    if summary.interrupted:
        return StopReason.TERMINATED if summary.terminated else StopReason.INTERRUPTED
    # lost: the run ended because the camera/stream died (not at --limit or by the user, even if read-ahead saw it)
    summary.source_lost = source.lost and source.stop_reason != StopReason.BY_USER
    return source.stop_reason
