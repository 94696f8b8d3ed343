"""The int8 candidates convert searches over (and `parity --fix` re-uses), built from the format table's recipe.

TFLite (tflite-int8): the table's TFLiteConverter recipe, and the LiteRT Quantizer's static_wi8_ai8 with
min/max and OCTAV ranges (int8 I/O, so only when int8 I/O was asked for). edgetpu keeps the converter alone:
its uint8 I/O contract and edgetpu_compiler have not been verified with the LiteRT Quantizer's output.
ONNX (onnx-int8): the table's recipe with calibration method × per-channel varied (see quant_search).
Every candidate carries the options recorded in manifest.json and the artifact metadata when it is chosen.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from edgeproof.convert.quant_search import Candidate
from edgeproof.formats import FORMATS, OnnxRecipe

ONNX_VARIANTS = (("MinMax", True), ("MinMax", False), ("Percentile", True), ("Entropy", True))


def litert_options(recipe: str, algorithm: str, protect: list | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"converter": "tf.lite.TFLiteConverter (float32)", "quantizer": "litert-quantizer",
                           "recipe": recipe, "algorithm": algorithm, "io_type": "int16" if "ai16" in recipe else "int8"}
    if protect:
        out["protect"] = [list(p) for p in protect]
    return out


def converter_candidate(fmt_name: str, saved_model: Any, io_type: str, **overrides) -> Candidate:
    """The table's TFLiteConverter recipe (overrides: denylisted_nodes / int16x8, for the fixes)."""
    from edgeproof.convert.tflite import to_tflite

    fmt = FORMATS[fmt_name]
    opts = fmt.recipe.options(io_type)
    if overrides.get("denylisted_nodes"):
        opts["denylisted_nodes"] = list(overrides["denylisted_nodes"])
    if overrides.get("int16x8"):
        opts.update(ops="EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8", io_type=io_type)

    def build(x: np.ndarray, dest: Path) -> Path:
        p = dest.with_suffix(".tflite")
        p.write_bytes(to_tflite(saved_model, fmt_name, calib=x, io_type=io_type, **overrides))
        return p

    name = "tflite-converter" + (" int16x8" if overrides.get("int16x8") else "") + \
        (f" + {len(overrides['denylisted_nodes'])} float tensor(s)" if overrides.get("denylisted_nodes") else "")
    return Candidate(name, opts, build)


def litert_candidate(fp32: bytes, recipe: str = "static_wi8_ai8", algorithm: str = "min_max",
                     protect: list | None = None) -> Candidate:
    from edgeproof.convert import litert_quant

    def build(x: np.ndarray, dest: Path) -> Path:
        p = dest.with_suffix(".tflite")
        p.write_bytes(litert_quant.quantize(fp32, x, recipe, algorithm, [tuple(t) for t in protect or []]))
        return p

    extra = f" protecting {len(protect)} tensor(s)" if protect else ""
    return Candidate(f"litert-quantizer {recipe}/{algorithm}{extra}", litert_options(recipe, algorithm, protect), build)


def tflite_candidates(fmt_name: str, saved_model: Any, fp32: bytes | None, io_type: str) -> list[Candidate]:
    """What convert compares for a full-integer TFLite format, the table's converter recipe first."""
    from edgeproof.convert import litert_quant

    out = [converter_candidate(fmt_name, saved_model, io_type)]
    lq = litert_recipe(fmt_name, io_type)
    if lq and fp32 is not None and litert_quant.available():
        out += [litert_candidate(fp32, lq, "min_max"), litert_candidate(fp32, lq, "octav")]
    return out


def litert_recipe(fmt_name: str, io_type: str) -> str | None:
    """The LiteRT Quantizer recipe matching a TFLite format at this I/O type (it writes integer I/O), if any."""
    recipe = FORMATS[fmt_name].recipe
    if recipe.compiler is not None:
        return None
    io = recipe.io_type(io_type)
    int16 = "INT16" in (recipe.ops or "")
    if io == "int8" and not int16:
        return "static_wi8_ai8"
    if io == "int16" and int16:
        return "static_wi8_ai16"
    return None


def onnx_candidate(fp32_path: Path, recipe: OnnxRecipe, int16_tensors: list[str] | None = None,
                   exclude: list[str] | None = None) -> Candidate:
    from edgeproof.convert.onnx_quant import quantize_onnx

    opts = recipe.options()
    if int16_tensors:
        opts["tensors_int16"] = list(int16_tensors)
    if exclude:
        opts["nodes_kept_float"] = list(exclude)

    def build(x: np.ndarray, dest: Path) -> Path:
        return quantize_onnx(fp32_path, dest.with_suffix(".onnx"), x, nodes_to_exclude=exclude, recipe=recipe,
                             int16_tensors=int16_tensors)

    name = f"{recipe.calibrate_method}{'' if recipe.per_channel else ' per-tensor'}" + \
        (f" + {len(int16_tensors)} int16 tensor(s)" if int16_tensors else "") + \
        (f" + {len(exclude)} float node(s)" if exclude else "")
    return Candidate(name, opts, build)


def onnx_candidates(fmt_name: str, fp32_path: Path, variants=ONNX_VARIANTS) -> list[Candidate]:
    base = FORMATS[fmt_name].recipe
    return [onnx_candidate(fp32_path, replace(base, calibrate_method=m, per_channel=pc)) for m, pc in variants]


def keras_reference(model, head: str | None = None):
    """x -> the Keras model's class scores (the search's reference on the held-out images), through the same
    head rule as the runtime: without it a binary sigmoid's (N, 1) output was compared with the artifact's
    (N, 2) scores, and every recipe scored chance."""
    from edgeproof.convert.keras_model import class_scores_of

    return lambda x: class_scores_of(model, x, head or "probabilities")
