"""`edgeproof parity` as a CI gate on the conftest tiny run: broken artifacts exit 1 and are named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgeproof.cli.main import run_cli
from edgeproof.formats import FORMATS, artifact_filename

pytestmark = pytest.mark.slow


def _copy(src_dir: Path, dest: Path, *formats: str) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for f in formats:
        name = artifact_filename(FORMATS[f])
        shutil.copyfile(src_dir / name, dest / name)
    return dest


def _wrong_normalization(path: Path) -> None:
    """Bake a wrong contract into the metadata: pixels scaled to 0..1 while the graph expects 0..255."""
    from edgeproof.runtime.metadata import read_metadata, tflite_with_metadata

    meta = read_metadata(path)
    meta.preprocess.scale = 1 / 255.0
    path.write_bytes(tflite_with_metadata(path.read_bytes(), meta))


def _tamper_weight(path: Path) -> None:
    """Scale the largest float initializer by 1.5 (metadata untouched)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT]
    big = max(inits, key=lambda i: int(np.prod(i.dims)))
    big.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(big) * 1.5, big.name))
    onnx.save(model, str(path))


def test_broken_artifacts_fail_and_are_named(tiny_run, tiny_artifacts, tmp_path, capsys):
    art = _copy(tiny_artifacts, tmp_path / "art", "tflite-fp32", "tflite-fp16", "onnx-fp32")
    _wrong_normalization(art / "model.tflite-fp32.tflite")
    _tamper_weight(art / "model.onnx-fp32.onnx")
    (art / "model.tflite-dynamic.tflite").write_bytes(b"TFL3" + bytes(range(256)) * 8)  # not a flatbuffer
    code = run_cli(["parity", str(tiny_run), "--artifacts", str(art), "-o", str(tmp_path / "rep"),
                    "--backends", "litert,onnxruntime", "--no-e2e", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    assert "model.tflite-fp32.tflite [litert]: max |Δ|" in err
    assert "model.onnx-fp32.onnx [onnxruntime]: max |Δ|" in err
    assert "model.tflite-dynamic.tflite [litert]: cannot load/run with listed backend 'litert'" in err
    assert "model.tflite-fp16.tflite" not in err  # the untouched artifact passes
    data = json.loads((tmp_path / "rep" / "parity.json").read_text())
    failed = {(f["artifact"], f["metric"]) for f in data["failures"]}
    assert ("model.tflite-fp32.tflite", "max_abs") in failed and ("model.onnx-fp32.onnx", "max_abs") in failed
    assert ("model.tflite-dynamic.tflite", "load/run") in failed
    assert all(f["value"] > f["limit"] for f in data["failures"] if f["metric"] == "max_abs")
    assert "## Failures" in (tmp_path / "rep" / "parity.md").read_text()


def test_clean_artifacts_pass_with_overrides_and_unsupported_is_not_a_failure(tiny_run, tiny_artifacts, tmp_path,
                                                                             capsys):
    art = _copy(tiny_artifacts, tmp_path / "art", "onnx-fp32", "onnx-int8")
    code = run_cli(["parity", str(tiny_run), "--artifacts", str(art), "-o", str(tmp_path / "rep"), "--json",
                    "--backends", "onnxruntime,opencv", "--min-agreement", "0", "--max-delta-acc", "100",
                    "--no-e2e"])
    out = capsys.readouterr().out
    data = json.loads(out)
    assert code == 0 and data["passed"], data["failures"]
    rows = {(r["artifact"], r["backend"]): r for r in data["results"]}
    assert rows[("model.onnx-fp32.onnx", "opencv")]["status"] == "pass"
    int8_cv = rows[("model.onnx-int8.onnx", "opencv")]
    assert int8_cv["status"] == "unsupported" and int8_cv["reason"]  # OpenCV DNN cannot read QDQ int8
    assert data["tolerance_overrides"] == {"min_agreement": 0.0, "max_delta_acc": 100.0}
    assert rows[("model.onnx-int8.onnx", "onnxruntime")]["metrics"]["tolerance"]["min_top1_agreement"] == 0.0
    for png in ("accuracy_latency.png", "confusion.png"):
        assert (tmp_path / "rep" / png).stat().st_size > 0


def test_preprocessing_drift_is_measured_on_resized_images(tiny_run, tiny_artifacts, tmp_path):
    """Images larger than the model input: TF and OpenCV resize differently; the drift is reported."""
    import cv2

    from edgeproof.parity import run_parity
    from edgeproof.train.run_dir import load_run

    run = load_run(tiny_run)
    data = tmp_path / "data"
    for path, cls in run.split("test"):
        dest = data / run.labels[cls] / Path(path).name
        dest.parent.mkdir(parents=True, exist_ok=True)
        img = cv2.imread(path)
        cv2.imwrite(str(dest.with_suffix(".png")), cv2.resize(img, (45, 45), interpolation=cv2.INTER_CUBIC))
    art = _copy(tiny_artifacts, tmp_path / "art", "onnx-fp32")
    rep = run_parity(tiny_run, artifacts_dir=art, data_dir=data, backends=["onnxruntime"], triage=False,
                     out_dir=tmp_path / "rep", progress=False)
    pre = rep.e2e["preprocessing"]
    assert pre["n"] == len(run.split("test"))
    assert pre["pixels_max_abs"] > 0 and pre["pixels_identical_fraction"] < 1.0
    assert rep.e2e["dominant"] == "preprocessing"  # fp32 conversion drift is ~1e-8
    assert "preprocessing drift dominates" in rep.e2e["verdict"]


def test_usage_errors_are_one_line_exit_2(tiny_run, tmp_path, capsys):
    assert run_cli(["parity", str(tiny_run), "--artifacts", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err and "edgeproof convert" in err
    assert run_cli(["parity", str(tiny_run), "--backends", "tensorrt"]) == 2
    assert "valid backends" in capsys.readouterr().err
    assert run_cli(["parity", str(tmp_path / "no-run")]) == 2
    with pytest.raises(SystemExit) as exc:
        run_cli(["parity", str(tiny_run), "--min-agreement", "150"])
    assert exc.value.code == 2
