"""`parity --fix`: a variant is a fix only when every backend that judged the original artifact passes it.

The zoo's ResNet50 onnx-int8 with int16 activations passed in onnxruntime (191/192) and was promoted, though
OpenVINO, the format's other listed backend, ran it at 131/192."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from edgeproof.convert.quant_search import Candidate
from edgeproof.formats import FORMATS
from edgeproof.parity import fix_ladder, runner


def _variants(tmp_path: Path, names: list[str]):
    def build(name):
        def _build(calib, dest: Path) -> Path:
            dest.mkdir(parents=True, exist_ok=True)
            out = dest / f"{name}.onnx"
            out.write_bytes(name.encode())
            return out
        return _build

    return iter([fix_ladder.Variant("calibration", Candidate(n, {"recipe": n}, build(n)), True) for n in names])


def _ladder(tmp_path, monkeypatch, verdicts: dict[tuple[str, str], str], also: tuple[str, ...]):
    """Run the ladder with evaluate() answering verdicts[(variant file content, backend)]."""
    judged: list[tuple[str, str]] = []

    def evaluate(path, fmt, backend, batches, reference, tol, listed, **kw):
        key = (Path(path).read_bytes().decode(), backend)
        judged.append(key)
        return runner.Row(Path(path).name, Path(path), fmt.name, backend, verdicts[key],
                          "" if verdicts[key] == "pass" else f"{backend}: top-1 agreement 131/192")

    monkeypatch.setattr(runner, "evaluate", evaluate)
    monkeypatch.setattr(fix_ladder, "_write_with_meta", lambda built, dest, src, v: shutil.copyfile(built, dest))
    row = SimpleNamespace(backend="onnxruntime", path=tmp_path / "model.onnx-int8.onnx", artifact="model.onnx-int8.onnx")
    rows = fix_ladder.run_ladder(row, FORMATS["onnx-int8"], _variants(tmp_path, ["a", "b"]), np.zeros((1, 2)), None,
                                 None, None, tmp_path / "out", also)
    return rows, judged


def test_a_variant_that_breaks_another_backend_is_not_the_fix(tmp_path, monkeypatch):
    verdicts = {("a", "onnxruntime"): "pass", ("a", "openvino"): "fail",
                ("b", "onnxruntime"): "pass", ("b", "openvino"): "pass"}
    rows, judged = _ladder(tmp_path, monkeypatch, verdicts, also=("openvino",))
    assert judged == [("a", "onnxruntime"), ("a", "openvino"), ("b", "onnxruntime"), ("b", "openvino")]
    assert [(r.variant, r.backend, r.status) for r in rows] == [("calibration: a", "openvino", "fail"),
                                                                ("calibration: b", "onnxruntime", "pass")]


def test_without_other_backends_the_first_pass_on_the_failing_backend_is_the_fix(tmp_path, monkeypatch):
    verdicts = {("a", "onnxruntime"): "pass"}
    rows, judged = _ladder(tmp_path, monkeypatch, verdicts, also=())
    assert judged == [("a", "onnxruntime")]
    assert [(r.variant, r.status) for r in rows] == [("calibration: a", "pass")]


def test_an_edgetpu_ladder_goes_past_a_passing_fix_that_keeps_ops_off_the_edge_tpu(tmp_path, monkeypatch):
    """A passing variant with float/int16 ops stopped the edgetpu ladder although promote refuses it, so the
    all-integer rungs after it (recalibration on other images, the qat fine-tune) were never tried."""
    from edgeproof.parity.triage import _edgetpu_only

    def evaluate(path, fmt, backend, batches, reference, tol, listed, **kw):
        return runner.Row(Path(path).name, Path(path), fmt.name, backend, "pass", "")

    monkeypatch.setattr(runner, "evaluate", evaluate)
    monkeypatch.setattr(fix_ladder, "_write_with_meta", lambda built, dest, src, v: shutil.copyfile(built, dest))
    protect, qat = _variants(tmp_path, ["protect", "qat"])
    variants = iter([fix_ladder.Variant("protect", protect.candidate, False),  # float ops: runs partly on the CPU
                     fix_ladder.Variant("qat", qat.candidate, True)])
    row = SimpleNamespace(backend="litert", path=tmp_path / "model.edgetpu.tflite", artifact="model.edgetpu.tflite")
    rows = fix_ladder.run_ladder(row, FORMATS["edgetpu"], variants, np.zeros((1, 2)), None, None, None,
                                 tmp_path / "out", (), accept=_edgetpu_only(lambda fixed: None))
    assert [(r.step, r.status, bool(r.rejected)) for r in rows] == [("protect", "pass", True), ("qat", "pass", False)]
    assert "Edge TPU" in rows[0].rejected
