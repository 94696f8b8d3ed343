"""Long runs: bounded frames in flight, live frames dropped (never file/video frames), bounded Summary.

No timing asserts: a live source outruns inference because the fake model's first predict waits
until the source has delivered every frame; frames alive are counted with weakref finalizers.
"""

from __future__ import annotations

import threading
import time
import weakref

import numpy as np
import pytest

from edgeproof.runtime import load
from edgeproof.runtime.pipeline import MAX_REASONS, OTHER_REASON, SKIP_EXAMPLES, Summary, _Buffer, run_pipeline
from edgeproof.runtime.running_stats import ALPHA, LogHistogram
from edgeproof.runtime.sources import Item, Source, open_source

cv2 = pytest.importorskip("cv2")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from _runtime_models import LABELS, color_onnx, solid

N = 300
WORKERS, QUEUE, BATCH = 2, 4, 2
BOUND = QUEUE + WORKERS + BATCH + 3  # the pipeline's documented bound on frames alive at once


class Alive:
    """Counts frames not yet garbage: +1 when the source makes one, -1 when the last reference goes."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = self.max = self.made = 0

    def track(self, frame: np.ndarray) -> np.ndarray:
        with self.lock:
            self.now += 1
            self.made += 1
            self.max = max(self.max, self.now)
        weakref.finalize(frame, self._gone)
        return frame

    def _gone(self) -> None:
        with self.lock:
            self.now -= 1


class FakeFrames(Source):
    """N solid frames (label = LABELS[index % 3]) as fast as the pipeline takes them; live or not."""

    kind = "camera"

    def __init__(self, n: int, live: bool, alive: Alive) -> None:
        super().__init__("fake")
        self.n, self.live, self.alive = n, live, alive
        self.exhausted = threading.Event()

    def __iter__(self):
        for i in range(self.n):
            yield Item(i, f"fake#{i}", frame=self.alive.track(solid(LABELS[i % 3])))
        self.stop_reason = "end of fake frames"
        self.exhausted.set()


class SlowModel:
    """The colour model, slowed down: waits for `gate` on the first predict, or sleeps `delay` per call."""

    def __init__(self, model, gate: threading.Event | None = None, delay: float = 0.0) -> None:
        self.model, self.gate, self.delay = model, gate, delay
        self.preprocess, self.takes_pixels = model.preprocess, model.takes_pixels  # what runtime.per_image reads

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self.gate is not None:
            assert self.gate.wait(20), "the source never got ahead of inference: it was blocked"
            self.gate = None
        time.sleep(self.delay)
        return self.model.predict(x)

    def topk(self, scores: np.ndarray, k: int):
        return self.model.topk(scores, k)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    with load(color_onnx(tmp_path_factory.mktemp("m") / "color.onnx-fp32.onnx")) as m:
        yield m


def _run(model, source, **kw):
    seen: list[tuple[int, str]] = []  # never the Result itself: it holds the frame (keep_frames)
    summary = run_pipeline(model, source, lambda r: seen.append((r.index, r.topk[0][0])), batch=BATCH,
                           workers=WORKERS, queue_size=QUEUE, keep_frames=True, **kw)
    return seen, summary


def _check_in_order_and_right(seen):
    indices = [i for i, _ in seen]
    assert indices == sorted(set(indices))  # in input order, no repeats
    assert all(label == LABELS[i % 3] for i, label in seen)


class FiniteCamera:
    """cv2.VideoCapture stand-in for a camera that delivers n frames, then fails (the source stops)."""

    def __init__(self, n: int, alive: Alive) -> None:
        self.n, self.alive, self.reads = n, alive, 0
        self.exhausted = threading.Event()

    def isOpened(self):
        return True

    def get(self, prop):
        return 30.0

    def read(self):
        i = self.reads
        self.reads += 1
        if i >= self.n:
            self.exhausted.set()
            return False, None
        return True, self.alive.track(solid(LABELS[i % 3]))

    def release(self):
        pass


@pytest.mark.parametrize("kind", ["fake-live-source", "camera-via-open_source"])
def test_live_source_faster_than_inference_drops_frames_and_stays_bounded(model, kind):
    alive = Alive()
    if kind == "fake-live-source":
        src = FakeFrames(N, live=True, alive=alive)
        gate = src.exhausted
    else:
        cam = FiniteCamera(N, alive)
        src = open_source("0", capture_factory=lambda t: cam, retries=0, sleep=lambda s: None)
        gate = cam.exhausted
    seen, summary = _run(SlowModel(model, gate=gate), src)
    assert alive.made == N
    assert summary.dropped > 0 and summary.count + summary.dropped == N and summary.skipped_total == 0
    _check_in_order_and_right(seen)
    assert seen[-1][0] == N - 1  # the freshest frame is never the one dropped
    assert alive.max <= BOUND, f"{alive.max} frames alive at once; the bound is {BOUND}"
    assert summary.to_dict()["dropped"] == summary.dropped


def test_file_like_source_never_drops_and_waits_for_inference(model):
    alive = Alive()
    seen, summary = _run(SlowModel(model, delay=0.001), FakeFrames(N, live=False, alive=alive))
    assert summary.dropped == 0 and summary.count == N and [i for i, _ in seen] == list(range(N))
    _check_in_order_and_right(seen)
    assert alive.max <= BOUND, f"{alive.max} frames alive at once; the bound is {BOUND}"


@pytest.mark.timeout(60)
def test_a_decode_worker_that_raises_ends_the_run_with_its_error(model, monkeypatch):
    """decode never raises for a bad input; if it does (a defect), the run must stop with that error, not wait
    for ever on the entries no live worker will claim."""
    from edgeproof.runtime import per_image

    real = per_image.decode_item

    def decode(item, *args, **kw):
        if item.index >= 7:
            raise RuntimeError(f"decode defect at {item.name}")
        return real(item, *args, **kw)

    monkeypatch.setattr(per_image, "decode_item", decode)
    with pytest.raises(RuntimeError, match="decode defect at fake#"):
        _run(model, FakeFrames(N, live=False, alive=Alive()))


def test_video_file_never_drops(model, tmp_path):
    path = tmp_path / "clip.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (20, 24))
    for i in range(N):
        w.write(solid(LABELS[i % 3]))
    w.release()
    seen, summary = _run(SlowModel(model, delay=0.001), open_source(str(path)))
    assert summary.dropped == 0 and summary.count == N and summary.stopped == "end of video"
    assert [i for i, _ in seen] == list(range(N))
    _check_in_order_and_right(seen)


def test_live_buffer_drops_the_oldest_frame_not_yet_being_decoded():
    buf = _Buffer(cap=3, live=True)
    for i in range(3):
        assert buf.put(Item(i, f"f#{i}"))
    entry, item = buf.claim()  # a worker is decoding frame 0
    assert item.index == 0
    buf.put(Item(3, "f#3"))  # full: frame 1 goes (0 is already being decoded)
    assert buf.dropped == 1 and [e.item.index for e in list(buf.entries)[1:]] == [2, 3]
    for _ in range(2):
        buf.claim()  # now 0, 2 and 3 are all being decoded
    buf.put(Item(4, "f#4"))  # nothing waits undecoded: the oldest goes
    assert buf.dropped == 2 and len(buf.entries) == 3
    file_buf = _Buffer(cap=1, live=False)
    file_buf.put(Item(0, "a"))
    file_buf.close()  # a waiting producer is released by close() and the item refused
    assert file_buf.put(Item(1, "b")) is False and file_buf.dropped == 0


def test_summary_memory_stays_bounded_and_percentiles_match_numpy():
    n = 200_000
    rng = np.random.default_rng(0)
    lat = rng.lognormal(mean=1.0, sigma=0.8, size=n)  # ms, a long right tail
    pre = rng.gamma(2.0, 0.3, size=n)
    s = Summary(source="soak", kind="camera")
    buckets = s.latencies_ms.counts.nbytes
    for a, b in zip(lat.tolist(), pre.tolist()):
        s.latencies_ms.add(a)
        s.preprocess_ms.add(b)
    reasons = ["zero-byte file", "not a decodable image (or truncated)", "cannot read: Permission denied"]
    for i in range(n):  # a few common reasons, and every 1000th input with a reason of its own
        s.skip(f"img{i}.jpg", reasons[i % 3] if i % 1000 else f"image too large: {i}x{i} pixels")
    assert s.latencies_ms.counts.nbytes == s.preprocess_ms.counts.nbytes == buckets <= 32 * 1024
    assert len(s.latencies_ms) == len(s.preprocess_ms) == n
    assert len(s.skipped) == SKIP_EXAMPLES and s.skipped[0] == ("img0.jpg", "image too large: 0x0 pixels")
    assert s.skipped_total == n and sum(s.skipped_by_reason.values()) == n
    assert len(s.skipped_by_reason) == MAX_REASONS + 1 and s.skipped_by_reason[OTHER_REASON] > 0
    assert s.skipped_by_reason["zero-byte file"] == sum(1 for i in range(n) if i % 1000 and i % 3 == 0)
    for hist, data in ((s.latencies_ms, lat), (s.preprocess_ms, pre)):
        for q in (1, 50, 90, 99, 99.9):
            est = hist.quantile(q)
            lo, hi = np.percentile(data, q, method="lower"), np.percentile(data, q, method="higher")
            assert lo * (1 - ALPHA) <= est <= hi * (1 + ALPHA), (q, est, lo, hi)
            assert est == pytest.approx(np.percentile(data, q), rel=ALPHA * 1.05)
    d = s.to_dict()
    for key in ("source", "kind", "count", "seconds", "fps", "p50_ms", "p90_ms", "p99_ms", "p50_preprocess_ms",
                "skipped", "skipped_total", "skipped_by_reason", "dropped", "stopped", "interrupted"):
        assert key in d
    assert d["p99_ms"] == pytest.approx(np.percentile(lat, 99), rel=ALPHA * 1.05, abs=1e-3)
    assert len(d["skipped"]) == SKIP_EXAMPLES and d["skipped_total"] == n
    assert list(d["skipped_by_reason"])[0] in reasons  # most frequent first


def test_histogram_edge_cases():
    h = LogHistogram()
    assert h.quantile(50) is None and h.mean() is None
    h.add(0.0)
    h.add(0.0)
    assert h.quantile(50) == 0.0 and h.quantile(99) == 0.0
    h = LogHistogram()
    h.add(3.25)
    assert h.quantile(0) == h.quantile(100) == 3.25  # one value: min and max clamp it exactly
    h.add(1e12)  # beyond HIGH: counted in the last bucket, clamped to the exact max
    assert h.quantile(100) == 1e12 and len(h) == 2


def test_items_the_source_marks_as_errors_are_skipped_with_that_reason(model):
    class WithErrors(Source):
        kind = "folder"

        def __iter__(self):
            yield Item(0, "a#0", frame=solid("red"))
            yield Item(1, "broken.mp4", error="cannot open video (unsupported codec or corrupt file)")
            yield Item(2, "a#2", frame=solid("blue"))

    seen, summary = _run(model, WithErrors("w"))
    assert seen == [(0, "red"), (2, "blue")] and summary.skipped_total == 1
    assert summary.skipped == [("broken.mp4", "cannot open video (unsupported codec or corrupt file)")]


class StallingCapture:
    """A stream whose 6th read stalls until `resume` is set; records a release() that lands during a read."""

    def __init__(self, target) -> None:
        self.resume, self.in_read = threading.Event(), threading.Event()
        self.reads, self.released, self.released_during_read = 0, threading.Event(), False

    def isOpened(self) -> bool:
        return True

    def get(self, prop) -> float:
        return 0.0

    def read(self):
        self.in_read.set()
        try:
            self.reads += 1
            if self.reads == 6:
                self.resume.wait(30)
            return True, np.full((16, 16, 3), 200, np.uint8)
        finally:
            self.in_read.clear()

    def release(self) -> None:
        self.released_during_read |= self.in_read.is_set()
        self.released.set()


def test_a_stream_stalled_in_a_read_is_released_after_the_read_not_under_it(model, monkeypatch):
    """Ctrl-C while the stream hangs in read(): the run ends at once with its summary, and the capture is
    released by the producer when the read returns, never from the main thread under the read."""
    import edgeproof.runtime.pipeline as pipeline

    monkeypatch.setattr(pipeline, "JOIN_TIMEOUT", 0.05)
    caps: list[StallingCapture] = []
    source = open_source("rtsp://camera.invalid/stream", capture_factory=lambda t: caps.append(StallingCapture(t))
                         or caps[-1])

    def on_result(r) -> None:
        if r.index >= 4:
            cap = caps[0]
            while cap.reads < 6:  # the source is now stuck in its 6th read
                time.sleep(0.001)
            raise KeyboardInterrupt

    summary = run_pipeline(model, source, on_result, workers=1)
    cap = caps[0]
    assert summary.interrupted and summary.stopped == "interrupted (Ctrl-C)"
    assert not cap.released.is_set()  # still inside the stalled read: not released under it
    cap.resume.set()
    assert cap.released.wait(10) and not cap.released_during_read
