"""The LiteRT Quantizer (litert-quantizer, formerly ai-edge-quantizer): an fp32 .tflite quantized by recipe.

Google documents it as the successor of post-training quantization inside TFLiteConverter. Used here for
`static_wi8_ai8` (int8 weights and activations, int8 I/O) and `static_wi8_ai16` (int16 activations), with
per-tensor overrides by regex (`protect`: keep a tensor's op float or give it int16 activations), and for
its own per-tensor validation (SNR of every tensor, float model vs quantized, on the same inputs).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

import numpy as np

from edgeproof.errors import MissingDependency

RECIPES = ("static_wi8_ai8", "static_wi8_ai16")
ALGORITHMS = ("min_max", "octav")  # AlgorithmName.MIN_MAX_UNIFORM_QUANT, AlgorithmName.OCTAV


def _lib():
    try:
        from litert_quantizer import quantizer, recipe
    except ImportError:
        raise MissingDependency("litert_quantizer", "train", "the LiteRT Quantizer (int8 search and fixes)") from None
    return quantizer, recipe


def available() -> bool:
    import importlib.util

    return importlib.util.find_spec("litert_quantizer") is not None


def _signature(model: bytes) -> tuple[str, str]:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_content=bytes(model),
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    sigs = it.get_signature_list()
    key = next(iter(sigs))
    return key, sigs[key]["inputs"][0]


def _data(model: bytes, x: np.ndarray) -> dict:
    key, name = _signature(model)
    return {key: [{name: np.ascontiguousarray(x[i:i + 1], np.float32)} for i in range(len(x))]}


def _algorithm(recipe_mod, name: str):
    names = {"min_max": recipe_mod.AlgorithmName.MIN_MAX_UNIFORM_QUANT, "octav": recipe_mod.AlgorithmName.OCTAV}
    return names[name]


def quantize(fp32: bytes, calib: np.ndarray, recipe_name: str = "static_wi8_ai8", algorithm: str = "min_max",
             protect: Iterable[tuple[str, str]] = ()) -> bytes:
    """Quantized .tflite bytes (no edgeproof metadata). protect: (tensor name, "float" | "int16") overrides."""
    quantizer, recipe = _lib()
    if recipe_name not in RECIPES or algorithm not in ALGORITHMS:
        raise ValueError(f"recipe {recipe_name}/{algorithm}: valid recipes {RECIPES}, algorithms {ALGORITHMS}")
    qt = quantizer.Quantizer(bytearray(fp32))
    qt.load_quantization_recipe(getattr(recipe, recipe_name)(_algorithm(recipe, algorithm)))
    for tensor, how in protect:
        regex = f"^{re.escape(tensor)};"  # an op's scope: its output tensor names, each followed by ';'
        if how == "float":
            qt.update_quantization_recipe(regex, recipe.TFLOperationName.ALL_SUPPORTED,
                                          algorithm_key=recipe.AlgorithmName.NO_QUANTIZE)
        else:
            qt.add_static_config(regex, recipe.TFLOperationName.ALL_SUPPORTED, 16, 8,
                                 algorithm_key=_algorithm(recipe, algorithm))
    threads = max(1, os.cpu_count() or 1)
    qsv = qt.calibrate(_data(fp32, calib), num_threads=threads)
    return bytes(qt.quantize(qsv, enable_progress_report=False).quantized_model)


def tensor_snr(fp32: bytes, quantized: bytes, x: np.ndarray) -> dict[str, float]:
    """SNR (dB) of every intermediate tensor, float vs quantized, from the quantizer's own validation
    (which reports the power ratio mean(f²)/mse)."""
    quantizer, _ = _lib()
    from litert_quantizer.utils import validation_utils

    qt = quantizer.Quantizer(bytearray(fp32), previous_quantized_model=bytearray(quantized))
    res = qt.validate(_data(fp32, x), error_metrics=[validation_utils.ValidationErrorMetric.SNR],
                      num_threads=max(1, os.cpu_count() or 1))
    key, _ = _signature(fp32)
    sig = res.get_signature_comparison_result(key)
    out: dict[str, float] = {}
    for name, metrics in dict(sig.intermediate_tensors).items():
        v = metrics.get("snr") if isinstance(metrics, dict) else None
        if v is not None and np.isfinite(float(v)):
            out[str(name)] = float(10.0 * np.log10(max(float(v), 1e-12)))
    return out
