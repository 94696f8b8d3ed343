"""A format is one table row plus its conversion recipe (data): the converters read the recipe,
the manifest records it, and a new row converts without touching any converter code."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from _convert_helpers import fake_run, small_cnn

from edgeproof.formats import FORMATS, INT8_RECIPE, INT16X8_RECIPE, Format, OnnxRecipe, TFLiteRecipe


def test_every_format_has_a_recipe_of_its_family():
    for fmt in FORMATS.values():
        want = TFLiteRecipe if fmt.family == "tflite" else OnnxRecipe
        assert isinstance(fmt.recipe, want), fmt.name
        assert fmt.calibrated == fmt.recipe.calibrated
        if fmt.calibrated:
            assert fmt.quantized, f"{fmt.name}: calibrated but not marked quantized"


def test_recipe_names_are_real_converter_settings():
    """Every name stored as data resolves in the library that applies it (a typo fails here, not at convert)."""
    tf = pytest.importorskip("tensorflow", reason="needs edgeproof[train]")
    from onnxruntime.quantization import QuantFormat

    from edgeproof.convert.onnx_quant import QUANT_TYPES
    from edgeproof.convert.tflite import _tf_dtype

    for recipe in [f.recipe for f in FORMATS.values()] + [INT16X8_RECIPE]:
        if isinstance(recipe, TFLiteRecipe):
            for name in recipe.optimizations:
                assert hasattr(tf.lite.Optimize, name), name
            for name in recipe.supported_types + recipe.io_types:
                _tf_dtype(tf, name)
            assert recipe.calibrated == (recipe.ops is not None)
            if recipe.ops:
                assert hasattr(tf.lite.OpsSet, recipe.ops), recipe.ops
        elif recipe.quant_format:
            assert hasattr(QuantFormat, recipe.quant_format)
            assert recipe.activations in QUANT_TYPES and recipe.weights in QUANT_TYPES


def test_io_type_follows_the_request_when_the_recipe_accepts_it():
    assert INT8_RECIPE.io_type("uint8") == "uint8"
    assert FORMATS["edgetpu"].recipe.io_type("int8") == "uint8"  # always uint8 I/O
    assert INT16X8_RECIPE.io_type("int8") == "int16" and INT16X8_RECIPE.io_type("float32") == "float32"
    assert FORMATS["tflite-fp32"].recipe.io_type("int8") is None


@pytest.mark.slow
def test_a_new_row_converts_with_no_code_change(tmp_path, monkeypatch):
    """A full-int8 TFLite row with float32 I/O, added as data only: converted, verified, and the
    manifest's options are the recipe's settings."""
    pytest.importorskip("tensorflow", reason="needs edgeproof[train]")
    from ai_edge_litert.interpreter import Interpreter

    from edgeproof.convert import convert_run
    from edgeproof.runtime.inspect import tflite_flatbuffer

    base = FORMATS["tflite-int8"]
    row = Format("tflite-int8-floatio", ".tflite", "tflite", True, base.tolerance,
                 "TFLite full-int8 with float32 I/O", replace(INT8_RECIPE, io_types=("float32",)))
    monkeypatch.setitem(FORMATS, row.name, row)
    run = fake_run(tmp_path / "run", small_cnn(16, 3), ["a", "b", "c"], 16)
    manifest = convert_run(run, tmp_path / "out", [row.name], calib_count=12)
    result = manifest.get(row.name)
    assert result.status == "ok", result.error
    assert Path(result.path).name == "model.tflite-int8-floatio.tflite"
    it = Interpreter(model_path=str(result.path))
    assert it.get_input_details()[0]["dtype"] == np.float32
    assert "QUANTIZE" in tflite_flatbuffer(Path(result.path).read_bytes())["op_histogram"]
    entry = json.loads((tmp_path / "out" / "manifest.json").read_text())["artifacts"][row.name]
    recipe = {k: v for k, v in entry["options"].items() if k not in ("recipe", "search")}
    assert recipe == {**row.recipe.options("int8"), "calibration_images": 12}
    assert entry["options"]["recipe"] == "tflite-converter"  # 12 images: too few to hold some out for the search
    assert entry["options"]["ops"] == "TFLITE_BUILTINS_INT8" and entry["options"]["io_type"] == "float32"
    assert entry["calibration_sha256"] == manifest.calibration["sha256"]


def test_convert_options_are_checked_once_when_built():
    from edgeproof.convert import ConvertOptions
    from edgeproof.errors import UsageError

    o = ConvertOptions("onnx-int8,tflite-fp32", calib_count=12, int8_io="uint8")
    assert o.names == ["tflite-fp32", "onnx-int8"] and o.calibrated  # table order, names checked
    assert ConvertOptions().names == list(FORMATS)
    assert ConvertOptions(["tflite-fp32"], calib_count=0).calib_count == 0  # no calibrated format: not used
    for kwargs, match in (({"formats": "tflite-int4"}, "unknown format 'tflite-int4'"),
                          ({"int8_io": "int4"}, "--int8-io 'int4' is not valid"),
                          ({"formats": "tflite-int8", "calib_count": 0}, "calibration count 0 is not valid"),
                          ({"formats": "onnx-fp32", "opset": 9}, "ONNX opset 9 is not valid"),
                          ({"seed": 1.5}, "--seed 1.5 is not valid")):
        with pytest.raises(UsageError, match=match):
            ConvertOptions(**kwargs)
