"""Every format in the table, converted from the shared tiny run: loads in its runtime, runs,
carries metadata that round-trips, is named after its format and listed in the manifest.

FORMAT_CHECKS holds one format-specific check per format; the meta-test fails when a format in
edgeproof.formats.FORMATS has none (add a check when you add a format).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from edgeproof.formats import FORMATS, artifact_filename
from edgeproof.runtime.metadata import read_metadata

slow = pytest.mark.slow  # needs the trained tiny run and its conversion (session fixtures)


def _tflite(path):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    it.allocate_tensors()
    return it


def _ops(path):
    from edgeproof.runtime.inspect import tflite_flatbuffer

    return tflite_flatbuffer(path.read_bytes())


def _onnx_ops(path):
    import onnx

    return {n.op_type for n in onnx.load(str(path)).graph.node}


def _check_fp32(path, meta):
    it = _tflite(path)
    assert it.get_input_details()[0]["dtype"] == np.float32
    assert "DEQUANTIZE" not in _ops(path)["op_histogram"]


def _check_fp16(path, meta):
    # float16 weights, dequantized to float32 at load: DEQUANTIZE ops on float16 constants
    assert "DEQUANTIZE" in _ops(path)["op_histogram"]
    assert _tflite(path).get_input_details()[0]["dtype"] == np.float32


def _check_dynamic(path, meta):
    it = _tflite(path)
    assert it.get_input_details()[0]["dtype"] == np.float32
    assert any(d["dtype"] == np.int8 for d in it.get_tensor_details()), "no int8 weight tensor"


def _check_int8(path, meta):
    inp = _tflite(path).get_input_details()[0]
    assert inp["dtype"] == np.int8 and meta.input.dtype == "int8"
    assert meta.input.scale == pytest.approx(inp["quantization"][0]) and meta.input.zero_point == inp["quantization"][1]
    assert meta.extra["options"]["ops"] == "TFLITE_BUILTINS_INT8"


def _check_int16x8(path, meta):
    inp = _tflite(path).get_input_details()[0]
    assert inp["dtype"] == np.int16 and meta.input.dtype == "int16" and inp["quantization"][1] == 0  # symmetric
    assert "INT16" in meta.extra["options"].get("ops", meta.extra["options"].get("recipe", "")).upper() \
        or meta.extra["options"].get("quantizer") == "litert-quantizer"


def _check_edgetpu(path, meta):
    it = _tflite(path)
    assert it.get_input_details()[0]["dtype"] == np.uint8 and it.get_output_details()[0]["dtype"] == np.uint8
    assert meta.input.dtype == "uint8" and meta.input.scale and meta.output.scale
    assert meta.extra["edgetpu"]["compiled"] is False  # no edgetpu_compiler on CI machines


def _check_onnx_fp32(path, meta):
    assert meta.input.name == "image" and meta.input.shape[0] is None  # dynamic batch
    assert "QuantizeLinear" not in _onnx_ops(path)


def _check_onnx_int8(path, meta):
    ops = _onnx_ops(path)
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert meta.extra["options"]["quant_format"] == "QDQ"


FORMAT_CHECKS = {
    "tflite-fp32": _check_fp32, "tflite-fp16": _check_fp16, "tflite-dynamic": _check_dynamic,
    "tflite-int8": _check_int8, "tflite-int16x8": _check_int16x8, "edgetpu": _check_edgetpu, "onnx-fp32": _check_onnx_fp32,
    "onnx-int8": _check_onnx_int8,
}


@slow
@pytest.mark.parametrize("name", list(FORMATS))
def test_artifact_loads_runs_and_carries_metadata(name, tiny_artifacts, tiny_run):
    from edgeproof.runtime import load
    from edgeproof.train.run_dir import load_run

    fmt = FORMATS[name]
    path = tiny_artifacts / artifact_filename(fmt)
    assert path.is_file(), sorted(p.name for p in tiny_artifacts.iterdir())
    run = load_run(tiny_run)
    meta = read_metadata(path)
    assert meta is not None and meta.format == name
    assert meta.labels == run.labels
    assert meta.preprocess.to_dict() == run.preprocess.to_dict()
    assert meta.source_sha256 == hashlib.sha256(run.model_path.read_bytes()).hexdigest()
    assert {"edgeproof", "tensorflow", "keras"} <= set(meta.versions)
    assert meta.input.shape[1:] == [run.preprocess.height, run.preprocess.width, 3]
    assert meta.output.shape[-1] == len(run.labels)
    FORMAT_CHECKS[name](path, meta)
    # the runtime, given nothing but the file, predicts probabilities for real images
    from edgeproof.runtime.preprocess import load_batch

    x, _, _ = load_batch([p for p, _ in run.split("test")[:4]], meta.preprocess)
    model = load(path)
    try:
        y = model.predict(x)
    finally:
        model.close()
    assert y.shape == (len(x), len(run.labels)) and np.all(np.isfinite(y))
    np.testing.assert_allclose(y.sum(axis=1), 1.0, atol=0.05)


@slow
@pytest.mark.parametrize("name", list(FORMATS))
def test_manifest_entry(name, tiny_artifacts):
    data = json.loads((tiny_artifacts / "manifest.json").read_text())
    entry = data["artifacts"][name]
    path = tiny_artifacts / entry["path"]
    assert entry["path"] == artifact_filename(FORMATS[name])
    assert entry["status"] == "ok" and entry["error"] is None
    assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert entry["bytes"] == path.stat().st_size and entry["seconds"] > 0
    calibrated = FORMATS[name].calibrated
    assert (entry["calibration_sha256"] == data["calibration"]["sha256"]) if calibrated else \
        entry["calibration_sha256"] is None
    assert data["calibration"]["used"] == 60 and data["calibration"]["skipped"] == 0


def test_every_format_has_a_check():
    """META-TEST: a format added to the table without a check here fails the suite."""
    missing = sorted(set(FORMATS) - set(FORMAT_CHECKS))
    stale = sorted(set(FORMAT_CHECKS) - set(FORMATS))
    assert not missing, f"formats without a conversion test: {missing}; add them to FORMAT_CHECKS"
    assert not stale, f"FORMAT_CHECKS lists formats no longer in the table: {stale}"


@slow
def test_no_temp_files_left(tiny_artifacts):
    assert not [p.name for p in tiny_artifacts.iterdir() if p.name.endswith(".tmp")]
