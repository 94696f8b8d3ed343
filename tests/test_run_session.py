"""`run_session`: `edgeproof run` as a library call. The README's example runs as written, and gives the
scores a NumPy reference of the model computes; sinks, progress and cleanup behave as documented."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from edgeproof.errors import UsageError
from edgeproof.progress import ProgressEvent
from edgeproof.runtime import LoadSpec, RunOptions, run_session

ROOT = Path(__file__).resolve().parents[1]
N_IMAGES = 4


@pytest.fixture()
def workdir(tmp_path, monkeypatch):
    """model.onnx (8x8x3 -> 3 classes, with an exact reference) and photos/ with N_IMAGES PNGs and a bad file."""
    pytest.importorskip("onnx")
    import cv2
    from _tiny_onnx import build_linear_onnx

    _, reference = build_linear_onnx(tmp_path / "model.onnx")
    (tmp_path / "photos").mkdir()
    rng = np.random.default_rng(7)
    expected = {}
    for i in range(N_IMAGES):
        rgb = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)  # the model's size: no resize, PNG: lossless
        name = f"photos/img{i}.png"
        cv2.imwrite(str(tmp_path / name), rgb[..., ::-1])
        expected[name] = reference(rgb[None].astype(np.float32))[0]
    (tmp_path / "photos" / "notes.jpg").write_bytes(b"not an image at all")
    monkeypatch.chdir(tmp_path)
    return expected


def test_the_readme_example_runs_a_folder_as_written(workdir, capsys):
    block = re.search(r"<!-- api-example: run a folder -->\n```python\n(.*?)```", (ROOT / "README.md").read_text(),
                      re.S)
    assert block, "README lost its run_session example"
    code = block.group(1)
    assert len([ln for ln in code.splitlines() if ln.strip()]) <= 5
    exec(compile(code, "README.md", "exec"), {})
    lines = capsys.readouterr().out.splitlines()
    rows = [ln.split() for ln in lines[:-1]]
    assert [r[0] for r in rows] == sorted(workdir)  # every image, in input order
    for name, label, score in rows:
        ref = workdir[name]
        assert label == f"class_{int(np.argmax(ref))}" and abs(float(score) - float(ref.max())) < 1e-5
    assert lines[-1].startswith(f"{N_IMAGES} classified, 1 skipped: [('photos/notes.jpg', 'not an image")


class _Recorder:
    def __init__(self, stop_after: int | None = None) -> None:
        self.names, self.model, self.closed, self.stop_after = [], None, 0, stop_after

    def start(self, model) -> None:
        self.model = model

    def add(self, result) -> bool:
        self.names.append(result.name)
        return self.stop_after is None or len(self.names) < self.stop_after

    def close(self) -> None:
        self.closed += 1


def test_a_sink_stops_the_run_and_every_sink_sees_the_same_results_and_progress(workdir):
    first, second, events = _Recorder(stop_after=2), _Recorder(), []
    summary = run_session(LoadSpec("model.onnx"), "photos/", [first, second], events.append,
                          options=RunOptions(batch=3))
    assert first.names == second.names == sorted(workdir)[:len(first.names)] and len(first.names) >= 2
    assert summary.stopped == "stopped by the user" and first.closed == second.closed == 1
    assert first.model is not None and summary.model["backend"] == "onnxruntime"
    assert [e.kind for e in events][0] == "start" and events[-1].kind == "stop"
    assert max(e.completed for e in events if e.kind == "task") == len(first.names)
    assert all(isinstance(e, ProgressEvent) for e in events)


def test_a_model_that_cannot_load_closes_the_source_and_the_sinks(workdir, tmp_path):
    from edgeproof.runtime.sources import open_source

    source, sink = open_source("photos/"), _Recorder()
    closed = []
    source.close = lambda: closed.append(True)  # type: ignore[method-assign]
    with pytest.raises(UsageError, match="not found"):
        run_session(LoadSpec(tmp_path / "missing.onnx"), source, [sink])
    assert closed and sink.closed == 1 and sink.model is None


@pytest.mark.parametrize("kwargs,message", [
    ({"batch": 0}, "--batch must be >= 1; got 0"), ({"top_k": 2.5}, "--top-k takes a whole number"),
    ({"limit": -1}, "--limit must be >= 1"), ({"infer_timeout": float("nan")}, "--infer-timeout must be"),
])
def test_run_options_are_checked_once_when_built(kwargs, message):
    with pytest.raises(UsageError, match=message):
        RunOptions(**kwargs)


def test_a_path_source_runs_like_its_string_and_a_wrong_type_is_one_usage_error(workdir):
    by_str, by_path = [], []
    run_session(LoadSpec("model.onnx"), "photos/img0.png", sinks=[by_str.append])
    run_session(LoadSpec("model.onnx"), Path("photos/img0.png"), sinks=[by_path.append])
    assert len(by_path) == 1 and np.allclose(by_path[0].scores, workdir["photos/img0.png"], atol=1e-5)
    assert np.array_equal(by_path[0].scores, by_str[0].scores)
    with pytest.raises(UsageError, match="nope.png"):  # a missing file is named, whatever the model
        run_session(LoadSpec("model.onnx"), Path("photos/nope.png"))
    with pytest.raises(UsageError, match="got list"):
        run_session(LoadSpec("model.onnx"), ["photos/img0.png"])
