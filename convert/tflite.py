"""Keras -> TFLite: fp32, fp16 weights, dynamic-range int8, full-integer int8, Edge TPU-ready.

Also the re-export hooks parity triage uses: `denylisted_nodes` keeps named tensors' ops in float
(calibrate once, then the MLIR quantizer with a denylist), `int16x8` quantizes activations to int16.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from edgeproof.convert.options import IO_TYPES  # what --int8-io may ask for
from edgeproof.errors import UsageError
from edgeproof.formats import FORMATS, INT16X8_RECIPE, TFLiteRecipe

log = logging.getLogger(__name__)
UNSUPPORTED_OP = "not yet supported for op"  # the converter's words for an op without a kernel in the ops set


def _tf_dtype(tf, name: str):
    return {"int8": tf.int8, "uint8": tf.uint8, "float32": tf.float32, "int16": tf.int16,
            "float16": tf.float16}[name]


def representative_dataset(calib: np.ndarray):
    """The calibration batch as the one-image-at-a-time generator TFLite's converter and debugger take."""

    def gen():
        for i in range(len(calib)):
            yield [np.ascontiguousarray(calib[i : i + 1], dtype=np.float32)]

    return gen


def _converter(model: Any):
    """A Keras model, or the path of a SavedModel exported from one (convert_run exports once)."""
    import tensorflow as tf

    if isinstance(model, (str, Path)):
        return tf.lite.TFLiteConverter.from_saved_model(str(model))
    return tf.lite.TFLiteConverter.from_keras_model(model)


def _bare_interpreter(model_bytes: bytes) -> Any:
    """A light interpreter on a flatbuffer in memory, without default delegates (runtime's one helper module)."""
    from edgeproof.errors import MissingDependency
    from edgeproof.runtime.backends.tflite_interpreter import (
        light_interpreter,
        op_resolver_without_delegates,
        quiet_runtime_info,
    )

    found = light_interpreter()
    if found is None:
        raise MissingDependency("ai-edge-litert", None, "reading .tflite tensors")
    resolver = op_resolver_without_delegates(found[0])
    with quiet_runtime_info():
        if resolver is None:
            return found[0](model_content=model_bytes)
        return found[0](model_content=model_bytes, experimental_op_resolver_type=resolver)


def tensor_names(model_bytes: bytes) -> list[str]:
    """Names of every tensor in a TFLite flatbuffer (what `denylisted_nodes` refers to)."""
    return [d["name"] for d in _bare_interpreter(model_bytes).get_tensor_details()]


def recipe_for(fmt_name: str, int16x8: bool = False) -> TFLiteRecipe:
    """The table's recipe for a TFLite format; int16x8 swaps in int16 activations (full-integer formats only)."""
    fmt = FORMATS.get(fmt_name)
    if fmt is None or not isinstance(fmt.recipe, TFLiteRecipe):
        valid = [f.name for f in FORMATS.values() if isinstance(f.recipe, TFLiteRecipe)]
        raise UsageError(f"'{fmt_name}' is not a TFLite format; valid: {', '.join(valid)}")
    recipe = fmt.recipe
    if int16x8:
        _full_integer_only(recipe, fmt_name)
        recipe = replace(recipe, ops=INT16X8_RECIPE.ops, io_types=INT16X8_RECIPE.io_types,
                         float_fallback=INT16X8_RECIPE.float_fallback, float_first_conv=INT16X8_RECIPE.float_first_conv)
    return recipe


def _full_integer_only(recipe: TFLiteRecipe, fmt_name: str) -> None:
    if not recipe.calibrated:
        full = [f.name for f in FORMATS.values() if isinstance(f.recipe, TFLiteRecipe) and f.calibrated]
        raise UsageError(f"denylisted_nodes/int16x8 apply to full-integer formats ({', '.join(full)}), "
                         f"not '{fmt_name}'")


def to_tflite(model: Any, fmt_name: str, calib: np.ndarray | None = None, io_type: str = "int8",
              denylisted_nodes: Iterable[str] | None = None, int16x8: bool = False) -> bytes:
    """Convert a Keras model (or a SavedModel folder exported from it) to TFLite bytes, no metadata.

    fmt_name: a TFLite row of the format table; its recipe in the format table says what the converter does.
    io_type: the requested I/O type of full-integer formats (a recipe that does not accept it uses its
    default: edgetpu is always uint8, int16x8 is int16 unless float32).
    denylisted_nodes: output-tensor names whose ops stay float (full-integer formats only).
    int16x8: int16 activations / int8 weights (full-integer formats only).
    """
    if io_type not in IO_TYPES:
        raise UsageError(f"int8 I/O type '{io_type}' is not valid; valid: {', '.join(IO_TYPES)}")
    denylist = [str(n) for n in (denylisted_nodes or [])]
    if denylist and int16x8:
        raise UsageError("denylisted_nodes and int16x8 cannot be combined; choose one triage option")
    recipe = recipe_for(fmt_name, int16x8=int16x8)
    if denylist:
        _full_integer_only(recipe, fmt_name)
    if recipe.calibrated:
        from edgeproof.convert.calibration import require_batch

        require_batch(fmt_name, calib)
    return convert_with_recipe(model, recipe, calib, io_type, denylist)


def convert_with_recipe(model: Any, recipe: TFLiteRecipe, calib: np.ndarray | None, io_type: str,
                        denylist: list[str] | None = None) -> bytes:
    """Apply a recipe's fields to a TFLiteConverter, field by field, and convert."""
    import tensorflow as tf

    conv = _converter(model)
    if recipe.optimizations:
        conv.optimizations = [getattr(tf.lite.Optimize, o) for o in recipe.optimizations]
    if recipe.supported_types:
        conv.target_spec.supported_types = [_tf_dtype(tf, t) for t in recipe.supported_types]
    if recipe.dense_per_tensor:
        conv._experimental_disable_per_channel_quantization_for_dense_layers = True
    if not recipe.calibrated:
        return conv.convert()
    conv.representative_dataset = representative_dataset(calib)
    io = recipe.io_type(io_type)
    first_conv = recipe.first_conv_float(io_type)
    if denylist or first_conv:
        with _quiet_quantizer():
            return _quantize_with_denylist(conv, list(denylist or []), io, first_conv)
    conv.target_spec.supported_ops = [getattr(tf.lite.OpsSet, recipe.ops)]
    if io is not None:
        conv.inference_input_type = conv.inference_output_type = _tf_dtype(tf, io)
    with _quiet_quantizer():
        try:
            return conv.convert()
        except Exception as exc:
            if not (recipe.float_fallback and UNSUPPORTED_OP in str(exc)):
                raise
            log.info("%s; converting again with TFLITE_BUILTINS so that op stays float", " ".join(str(exc).split()))
            conv.target_spec.supported_ops = [getattr(tf.lite.OpsSet, recipe.ops), tf.lite.OpsSet.TFLITE_BUILTINS]
            return conv.convert()


def float_ops(model_bytes: bytes) -> dict[str, int]:
    """{op name: count} of the ops that compute in float in a quantized flatbuffer (QUANTIZE/DEQUANTIZE aside)."""
    it = _bare_interpreter(model_bytes)
    found: dict[str, int] = {}
    for op in it._get_ops_details():
        if op["op_name"] in ("QUANTIZE", "DEQUANTIZE"):
            continue
        if any(np.dtype(t) in (np.float32, np.float16) for t in op.get("result_types") or ()):
            found[op["op_name"]] = found.get(op["op_name"], 0) + 1
    return found


def _quiet_quantizer():
    """The calibrating quantizer prints 'fully_quantize: 0, inference_type: 6, ...' from C++ to fd 2."""
    from edgeproof.stderr_filter import filtered_stderr

    return filtered_stderr(lambda line: not line.startswith("fully_quantize: "))


def first_conv_output(model_bytes: bytes) -> str | None:
    """The output tensor of the first convolution in execution order (what a denylist keeps float), if any."""
    it = _bare_interpreter(model_bytes)
    names = {d["index"]: d["name"] for d in it.get_tensor_details()}
    for op in it._get_ops_details():
        if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D") and len(op["outputs"]):
            return names[int(op["outputs"][0])]
    return None


def _quantize_with_denylist(conv, denylist: list[str], io: str, first_conv: bool = False) -> bytes:
    """Calibrate once, then run the MLIR quantizer keeping the denylisted tensors' ops in float
    (first_conv: the first convolution's too, the recipe's float_first_conv).

    This is what tf.lite.experimental.QuantizationDebugger does for `denylisted_nodes`, with the
    model's I/O type kept as requested (float ops between int8 ones get QUANTIZE/DEQUANTIZE).
    """
    import tensorflow as tf
    from tensorflow.lite.python import convert as tfl_convert

    conv._experimental_calibrate_only = True
    calibrated = conv.convert()
    if first_conv and (name := first_conv_output(calibrated)) and name not in denylist:
        denylist = [*denylist, name]
    known = set(tensor_names(calibrated))
    unknown = [n for n in denylist if n not in known]
    if unknown:
        sample = ", ".join(sorted(known)[:8])
        raise UsageError(f"denylisted node(s) {', '.join(unknown)} are not tensors of this model; "
                         f"tensor names look like: {sample} (see 'edgeproof inspect')")
    integer_io = io not in (None, "float32")  # fully_quantize also quantizes the model's inputs and outputs
    return tfl_convert.mlir_quantize(
        calibrated, disable_per_channel=False, fully_quantize=integer_io,
        input_data_type=_tf_dtype(tf, io or "float32"), output_data_type=_tf_dtype(tf, io or "float32"),
        denylisted_nodes=denylist,
    )


def read_specs(model_bytes: bytes) -> tuple[dict, dict]:
    """(input, output) tensor specs read back from a TFLite flatbuffer: name, shape, dtype, scale, zero point."""
    from edgeproof.runtime.backends.tflite_interpreter import tensor_spec

    it = _bare_interpreter(model_bytes)
    return tensor_spec(it.get_input_details()[0]).to_dict(), tensor_spec(it.get_output_details()[0]).to_dict()
