"""Sources (files, folders, globs, lists, video, camera, device, stream, picam) and the threaded pipeline.

Uses a TF-free ONNX colour classifier (top-1 = dominant channel of a solid image) so every expected
answer is known; cameras and streams are injected capture objects, no hardware needed.
"""

from __future__ import annotations

import _thread
import os
import signal
import threading
import time

import numpy as np
import pytest

from edgeproof.errors import EdgeproofError, UsageError
from edgeproof.runtime import load
from edgeproof.runtime.pipeline import run_pipeline
from edgeproof.runtime.sources import CaptureSource, open_source

cv2 = pytest.importorskip("cv2")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from _runtime_models import LABELS, color_onnx, solid


class FakeCapture:
    """cv2.VideoCapture stand-in: yields `frames` (cycled when endless), can fail, can send Ctrl-C.

    "Endless" is bounded all the same (MAX_READS, about 40 s): a test whose stop signal never arrives
    fails on its assertions instead of hanging the suite."""

    MAX_READS = 20_000

    def __init__(self, frames, opened=True, fail_from=None, fail_count=10**9, endless=False, sigint_at=None):
        self.frames, self.opened, self.endless = list(frames), opened, endless
        self.fail_from, self.fail_count, self.sigint_at = fail_from, fail_count, sigint_at
        self.reads = self.failed = 0
        self.released = False

    def isOpened(self):
        return self.opened

    def get(self, prop):
        return 12.0

    def read(self):
        i = self.reads
        self.reads += 1
        if self.sigint_at is not None and i == self.sigint_at:
            # Ctrl-C as Python sees it (the SIGINT handler runs in the main thread). Not os.kill: native
            # libraries loaded by other tests in this process (OpenVINO/TBB) may install their own handlers.
            _thread.interrupt_main(signal.SIGINT)
        if self.fail_from is not None and i >= self.fail_from and self.failed < self.fail_count:
            self.failed += 1
            return False, None
        k = i - self.failed
        if (k >= len(self.frames) and not self.endless) or i >= self.MAX_READS:
            return False, None
        if self.endless:
            time.sleep(0.002)
        return True, self.frames[k % len(self.frames)].copy()

    def release(self):
        self.released = True


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = color_onnx(tmp_path_factory.mktemp("m") / "color.onnx-fp32.onnx")
    with load(path) as m:
        yield m


@pytest.fixture(scope="module")
def image_tree(tmp_path_factory):
    """root/a/*.png, root/b/c/*.jpg (nested), plus unreadable files."""
    root = tmp_path_factory.mktemp("imgs")
    expected = {}
    for i, name in enumerate(LABELS * 2):
        sub = root / ("a" if i < 3 else "b/c")
        sub.mkdir(parents=True, exist_ok=True)
        p = sub / f"{i}_{name}.{'png' if i < 3 else 'jpg'}"
        cv2.imwrite(str(p), solid(name))
        expected[str(p)] = name
    (root / "a" / "empty.png").write_bytes(b"")
    (root / "b" / "notes.jpg").write_text("not an image")
    return root, expected


def _run(model, source, **kw):
    results = []
    summary = run_pipeline(model, source, results.append, **kw)
    return results, summary


def test_single_image(model, image_tree):
    _, expected = image_tree
    path = next(p for p in expected if p.endswith("0_red.png"))
    results, summary = _run(model, open_source(path))
    assert [r.topk[0][0] for r in results] == ["red"] and summary.count == 1 and summary.kind == "image"


def test_folder_recursive_in_order_with_unreadable_files_skipped(model, image_tree):
    root, expected = image_tree
    results, summary = _run(model, open_source(str(root)), batch=4, workers=3)
    assert summary.kind == "folder" and summary.count == len(expected)
    assert [r.index for r in results] == sorted(r.index for r in results)  # input order kept
    assert {r.name: r.topk[0][0] for r in results} == expected
    skipped = dict(summary.skipped)
    assert skipped[str(root / "a" / "empty.png")] == "zero-byte file"
    assert skipped[str(root / "b" / "notes.jpg")] == "not an image (looks like text)"
    d = summary.to_dict()
    assert d["fps"] > 0 and d["p50_ms"] is not None and len(d["skipped"]) == 2


def test_glob_and_list_file(model, image_tree, tmp_path):
    root, expected = image_tree
    results, summary = _run(model, open_source(str(root / "**" / "*.jpg")))
    assert summary.kind == "glob" and sorted(r.name for r in results) == sorted(p for p in expected if p.endswith(".jpg"))
    lst = root / "list.txt"
    rel = os.path.relpath(next(p for p in expected if p.endswith("1_green.png")), root)
    lst.write_text(f"# my images\n{rel}\n\n{root / 'b' / 'c' / '5_blue.jpg'}\nmissing.png\n")
    results, summary = _run(model, open_source(str(lst)))
    assert summary.kind == "list" and [r.topk[0][0] for r in results] == ["green", "blue"]
    assert summary.skipped[0][0].endswith("missing.png") and summary.skipped[0][1] == "not found"
    with pytest.raises(UsageError, match="matches no files"):
        open_source(str(tmp_path / "*.nothing"))


def test_video_file_written_by_cv2(model, tmp_path):
    path = tmp_path / "clip.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 24))
    assert w.isOpened()
    names = ["red", "green", "blue", "blue", "green", "red", "red"]
    for n in names:
        w.write(solid(n, 24, 32))
    w.release()
    src = open_source(str(path))
    assert src.kind == "video" and src.is_stream and src.fps == pytest.approx(10, rel=0.01)
    results, summary = _run(model, src, batch=3)
    assert [r.topk[0][0] for r in results] == names
    assert summary.stopped == "end of video" and results[0].name == f"{path}#0"
    # the same file as a stream URL (OpenCV's FFmpeg reads file:// URLs)
    results, summary = _run(model, open_source(f"file://{path}", retries=1, backoff=0.001))
    assert summary.kind == "stream" and [r.topk[0][0] for r in results] == names


def test_camera_device_and_stream_via_injected_capture(model):
    frames = [solid(n) for n in LABELS]
    opened = []

    def factory(target):  # the first open delivers 3 frames; a reconnect (streams) finds nothing
        opened.append(target)
        return FakeCapture(frames if opened.count(target) == 1 else [])

    for spec, kind, target in (("0", "camera", 0), ("/dev/video7", "device", "/dev/video7"),
                               ("rtsp://cam.local/stream", "stream", "rtsp://cam.local/stream")):
        src = open_source(spec, capture_factory=factory, retries=2, backoff=0.01, sleep=lambda s: None)
        results, summary = _run(model, src)
        assert src.kind == kind and opened[0 if kind == "camera" else -1] == target
        assert [r.topk[0][0] for r in results] == LABELS
        assert "3 consecutive frame grabs failed" in summary.stopped
        assert src.cap is None  # released by the pipeline
    assert opened.count("rtsp://cam.local/stream") == 3  # the stream reconnected between retries


def test_missing_camera_is_a_clear_error():
    with pytest.raises(EdgeproofError, match=r"cannot open camera 0: no camera at that index"):
        open_source("0", capture_factory=lambda t: FakeCapture([], opened=False))
    with pytest.raises(EdgeproofError, match=r"camera device /dev/video97 does not exist"):
        open_source("/dev/video97")
    with pytest.raises(EdgeproofError, match=r"cannot open stream rtsp://nowhere"):
        open_source("rtsp://nowhere/x", capture_factory=lambda t: FakeCapture([], opened=False))
    with pytest.raises(UsageError, match="source 'no/such/thing' not found"):
        open_source("no/such/thing")


def test_failing_grabs_retry_with_backoff_then_stop_cleanly(model):
    sleeps = []
    cap = FakeCapture([solid("red")] * 3, fail_from=3)
    src = open_source("0", capture_factory=lambda t: cap, retries=4, backoff=0.01, max_backoff=0.05,
                      sleep=sleeps.append)
    results, summary = _run(model, src)
    assert summary.count == 3 and sleeps == [0.01, 0.02, 0.04, 0.05]
    assert summary.stopped.startswith("5 consecutive frame grabs failed from '0'") and cap.released
    # a transient failure recovers and the stream goes on
    sleeps.clear()
    cap = FakeCapture([solid("green")] * 4, fail_from=2, fail_count=2)
    src = open_source("1", capture_factory=lambda t: cap, retries=3, backoff=0.01, sleep=sleeps.append)
    _, summary = _run(model, src)
    assert summary.count == 4 and sleeps[:2] == [0.01, 0.02]
    # a stream reconnects (new capture object) between retries
    caps = []

    def reconnecting(target):
        caps.append(FakeCapture([solid("blue")] * 2 if not caps else [], fail_from=None if not caps else 0))
        return caps[-1]

    src = open_source("http://host/video.mjpg", capture_factory=reconnecting, retries=2, backoff=0.001,
                      sleep=lambda s: None)
    _, summary = _run(model, src)
    assert summary.count == 2 and len(caps) == 3 and caps[0].released


def test_ctrl_c_stops_cleanly_with_summary(model, python_sigint_handler):
    cap = FakeCapture([solid(n) for n in LABELS], endless=True, sigint_at=6)
    src = open_source("0", capture_factory=lambda t: cap)
    results, summary = _run(model, src)
    assert summary.interrupted and summary.stopped == "interrupted (Ctrl-C)"
    assert summary.count == len(results) >= 1 and cap.released
    # KeyboardInterrupt raised by the consumer itself (e.g. while printing)
    cap = FakeCapture([solid("red")], endless=True)
    seen = []

    def on_result(r):
        seen.append(r)
        if len(seen) == 3:
            raise KeyboardInterrupt

    summary = run_pipeline(model, open_source("0", capture_factory=lambda t: cap), on_result)
    assert summary.interrupted and summary.count == 3


def test_queue_is_bounded_and_limit_stops(model):
    pulled = []
    first_result_at = []

    class Counting:
        def __init__(self, cap):
            self.cap = cap

        def isOpened(self):
            return True

        def get(self, prop):
            return 0

        def read(self):
            pulled.append(1)
            return self.cap.read()

        def release(self):
            pass

    cap = FakeCapture([solid("red")], endless=True)
    # a video file (not live): the producer waits for inference; live sources drop frames instead
    # (tests/test_long_runs.py)
    src = CaptureSource("clip.avi", "video", "clip.avi", factory=lambda t: Counting(cap))

    def on_result(r):
        if not first_result_at:
            time.sleep(0.3)  # a slow consumer: the producer must block, not read ahead forever
            first_result_at.append(len(pulled))

    summary = run_pipeline(model, src, on_result, workers=2, queue_size=4, limit=5)
    assert summary.count == 5 and summary.stopped == "limit of 5 reached" and summary.dropped == 0
    assert first_result_at[0] <= 4 + 2 + 3  # queue + workers + in hand


def test_picam_missing_and_injected():
    import importlib.util

    if importlib.util.find_spec("picamera2") is None:
        with pytest.raises(EdgeproofError, match="picamera2"):
            open_source("picam")

    class Cam:
        n = 0
        stopped = False

        def capture_array(self):
            self.n += 1
            if self.n > 3:
                raise RuntimeError("camera unplugged")
            return np.dstack([solid("blue"), np.full((24, 20), 255, np.uint8)])  # XBGR-like 4 channels

        def stop(self):
            self.stopped = True

    cam = Cam()
    src = open_source("picam", picam_factory=lambda: cam, retries=1, backoff=0.0, sleep=lambda s: None)
    frames = list(src)
    src.close()
    assert len(frames) == 3 and frames[0].frame.shape == (24, 20, 3) and cam.stopped
    assert "consecutive frame grabs failed from 'picam'" in src.stop_reason


def test_threads_release_after_run(model, image_tree):
    root, _ = image_tree
    before = threading.active_count()
    _run(model, open_source(str(root)))
    deadline = time.time() + 3
    while threading.active_count() > before and time.time() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= before


_SIGINT_CHILD = r'''
import signal, sys
# A terminal's Ctrl-C semantics whatever this child inherited: started from a background job, SIGINT is
# SIG_IGN and Python then installs no KeyboardInterrupt handler of its own.
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.path.insert(0, sys.argv[1])
from _endless_camera import Endless
from _runtime_models import color_onnx
from edgeproof.runtime import load
from edgeproof.runtime.pipeline import run_pipeline
from edgeproof.runtime.sources import open_source


seen = [0]


def on_result(r):  # by results, not frame index: a live source may drop frames (frame 5 may never come)
    seen[0] += 1
    if seen[0] == 6:
        print("READY", flush=True)


with load(color_onnx(__import__("pathlib").Path(sys.argv[2]) / "c.onnx-fp32.onnx")) as m:
    s = run_pipeline(m, open_source("0", capture_factory=lambda t: Endless()), on_result)
print("SUMMARY", s.interrupted, s.stopped, s.count, flush=True)
'''


def test_real_sigint_in_a_fresh_process_stops_cleanly_with_summary(tmp_path):
    """A real Ctrl-C (SIGINT from outside) mid-stream: capture released, summary printed, exit 0."""
    import subprocess
    import sys
    from pathlib import Path

    child = subprocess.Popen([sys.executable, "-c", _SIGINT_CHILD, str(Path(__file__).parent), str(tmp_path)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "READY"
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=30)
    finally:
        child.kill()
    assert child.returncode == 0, err
    lines = out.splitlines()
    assert "released" in lines
    summary = next(ln for ln in lines if ln.startswith("SUMMARY"))
    assert summary.startswith("SUMMARY True interrupted (Ctrl-C)") and int(summary.split()[-1]) >= 6


def test_a_fifo_a_device_a_symlink_loop_or_a_broken_link_is_skipped_with_its_reason(model, tmp_path):
    """Given directly or matched by a glob, none of them is 'not found' or silently left out, and the
    FIFO (a read would block forever) and /dev/zero (a read would never end) are never read."""
    for name in ("good.png", "ok.jpg"):
        cv2.imwrite(str(tmp_path / name), solid("red"))
    os.mkfifo(tmp_path / "fifo.jpg")
    (tmp_path / "zero.jpg").symlink_to("/dev/zero")
    (tmp_path / "loop1.jpg").symlink_to("loop2.jpg")
    (tmp_path / "loop2.jpg").symlink_to("loop1.jpg")
    (tmp_path / "gone.png").symlink_to("nowhere.png")
    why = {"fifo.jpg": "not a regular file", "zero.jpg": "not a regular file",
           "loop1.jpg": "unreadable (Too many levels of symbolic links)",
           "gone.png": "broken symlink (its target is missing)"}
    for name, reason in why.items():
        results, summary = _run(model, open_source(str(tmp_path / name)))
        assert summary.kind == "image" and not results and summary.skipped == [(str(tmp_path / name), reason)]
    results, summary = _run(model, open_source(str(tmp_path / "*.*g")))
    assert [r.topk[0][0] for r in results] == ["red", "red"]
    assert {os.path.basename(n): w for n, w in summary.skipped} == {**why, "loop2.jpg": why["loop1.jpg"]}


@pytest.mark.parametrize("spec, stream", [("rtsp://cam/1", True), ("HTTP://cam/x.mjpg", True), ("Udp://@:5000", True),
                                          ("file:///tmp/v.avi", True), ("xhttp://cam", False), ("http:/cam", False),
                                          ("photo.png", False), ("ftp://cam/x", False)])
def test_stream_urls_are_told_by_scheme_in_any_case(spec, stream):
    from edgeproof.runtime.sources import is_url

    assert is_url(spec) is stream
