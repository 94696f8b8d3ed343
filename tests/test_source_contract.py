"""The typed Source/Summary contract between the pipeline and its callers: exclusions and the pixel limit
are arguments (no process-wide state), and the Summary says whether a live source was lost."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from _runtime_models import color_onnx, solid

from edgeproof.runtime import image_check, load
from edgeproof.runtime.pipeline import Summary, run_pipeline
from edgeproof.runtime.sources import CaptureSource, Source, StopReason, open_source

pytest.importorskip("onnxruntime")


class _Cap:
    """A capture that delivers `n` frames and then nothing (a camera that died)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def isOpened(self) -> bool:  # noqa: N802 - cv2's name
        return True

    def read(self):
        if self.n <= 0:
            return False, None
        self.n -= 1
        return True, solid("red")

    def get(self, prop: int) -> float:
        return 0.0

    def release(self) -> None:
        pass


@pytest.fixture
def model(tmp_path):
    with load(color_onnx(tmp_path / "model.onnx-fp32.onnx")) as m:
        yield m


def test_every_source_declares_the_contract():
    for name in ("live", "is_stream", "kind"):
        assert hasattr(Source, name)
    s = Source("x")
    assert (s.live, s.lost, s.stop_reason, s.max_pixels, s.excluded) == (False, False, None, None, [])


def test_exclude_is_an_argument_and_the_excluded_are_listed(tmp_path, model):
    for name in ("a.png", "b.png", "a.annotated.png"):
        cv2.imwrite(str(tmp_path / name), solid("green"))
    src = open_source(str(tmp_path), exclude=lambda p: ".annotated." in p.name)
    assert [p.name for p in src.excluded] == ["a.annotated.png"]
    names = []
    summary = run_pipeline(model, src, lambda r: names.append(r.name))
    assert sorted(n.rsplit("/", 1)[-1] for n in names) == ["a.png", "b.png"] and summary.count == 2


def test_pixel_limit_is_per_source_and_leaves_the_process_default_alone(tmp_path, model):
    cv2.imwrite(str(tmp_path / "big.png"), np.zeros((40, 40, 3), np.uint8))  # 1600 px
    cv2.imwrite(str(tmp_path / "small.png"), np.zeros((10, 10, 3), np.uint8))  # 100 px
    default = image_check.max_pixels()
    summary = run_pipeline(model, open_source(str(tmp_path), max_pixels=500), lambda r: None)
    assert summary.count == 1 and summary.skipped[0][1].startswith("image too large")
    assert image_check.max_pixels() == default  # nothing process-wide changed
    assert run_pipeline(model, open_source(str(tmp_path)), lambda r: None).count == 2  # another run, its own limit


def test_summary_says_when_the_live_source_was_lost(model):
    src = CaptureSource("0", "camera", 0, lambda t: _Cap(3), retries=1, backoff=0.001, sleep=lambda s: None)
    summary = run_pipeline(model, src, lambda r: None)
    assert summary.count == 3 and summary.source_lost and summary.to_dict()["source_lost"] is True
    assert "consecutive frame grabs failed" in summary.stopped
    src = CaptureSource("0", "camera", 0, lambda t: _Cap(3), retries=1, backoff=0.001, sleep=lambda s: None)
    summary = run_pipeline(model, src, lambda r: None, limit=2)
    assert summary.stopped == StopReason.limit(2) and not summary.source_lost
    assert Summary(source="x", kind="folder").to_dict()["source_lost"] is False
