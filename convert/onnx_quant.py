"""ONNX static int8 quantization (QDQ, per-channel) with onnxruntime, calibrated on a NHWC batch (transposed for
an NCHW model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeproof.atomic import copy_file, scratch_dir
from edgeproof.errors import UsageError
from edgeproof.formats import FORMATS, OnnxRecipe


def _reader(input_name: str, calib: np.ndarray, nchw: bool = False):
    from onnxruntime.quantization import CalibrationDataReader

    class BatchReader(CalibrationDataReader):
        """Feeds the calibration batch one image at a time."""

        def __init__(self) -> None:
            self._i = 0

        def get_next(self):
            if self._i >= len(calib):
                return None
            x = calib[self._i : self._i + 1]
            x = np.ascontiguousarray(x.transpose(0, 3, 1, 2) if nchw else x, dtype=np.float32)
            self._i += 1
            return {input_name: x}

        def rewind(self) -> None:
            self._i = 0

    return BatchReader()


def _resolve_exclude(exclude: list[str], src_names: set[str], pre_names: set[str], fname: str) -> list[str]:
    """Names as the quantizer sees them: quant_pre_process fuses nodes (MatMul+Add -> '<MatMul>/MatMulAddFusion'),
    so an fp32 node name that was fused away is replaced by the fused node(s) that carry it as a prefix;
    names of the pre-processed/QDQ graph (what parity triage reports) are accepted as they are."""
    out, unknown = [], []
    for n in exclude:
        if n in pre_names:
            out.append(n)
            continue
        fused = sorted(m for m in pre_names if m.startswith(n + "/"))
        if n in src_names or fused:
            out.extend(fused)
        else:
            unknown.append(n)
    if unknown:
        raise UsageError(f"node(s) {', '.join(unknown)} are not in '{fname}'; "
                         f"node names look like: {', '.join(sorted(src_names)[:8])}")
    return list(dict.fromkeys(out))


def is_nchw(shape: list) -> bool:
    """The model takes NCHW (an ONNX source exported from PyTorch): the NHWC calibration batch is transposed."""
    from edgeproof.contract import image_layout

    try:
        return image_layout(shape)[0] == "NCHW"
    except ValueError:
        return False


QUANT_TYPES = {"int8": "QInt8", "uint8": "QUInt8", "int16": "QInt16"}


CALIBRATE_METHODS = ("MinMax", "Entropy", "Percentile", "Distribution")


def quantize_onnx(fp32_path: str | Path, out_path: str | Path, calib: np.ndarray,
                  nodes_to_exclude: list[str] | None = None, recipe: OnnxRecipe | None = None,
                  int16_tensors: list[str] | None = None) -> Path:
    """quant_pre_process, then quantize_static with the recipe's settings (default: onnx-int8's row:
    QDQ, per-channel, int8 weights and activations, MinMax calibration, the first Conv and Softmax in float).

    nodes_to_exclude: ONNX node names kept in float (parity triage); int16_tensors: activation tensors
    given int16 instead (TensorQuantOverrides). Metadata props of the fp32 model are carried over.
    The result is written atomically to `out_path`.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    recipe = recipe or FORMATS["onnx-int8"].recipe
    if not isinstance(recipe, OnnxRecipe) or recipe.quant_format is None:
        raise UsageError(f"quantize_onnx needs a quantizing ONNX recipe, got {recipe!r}")
    if recipe.calibrate_method not in CALIBRATE_METHODS:
        raise UsageError(f"calibration method '{recipe.calibrate_method}' is not valid; valid: "
                         f"{', '.join(CALIBRATE_METHODS)}")
    from edgeproof.convert.calibration import require_batch

    require_batch("onnx-int8", calib)
    fp32_path = Path(fp32_path)
    src = onnx.load(str(fp32_path))
    exclude = [str(n) for n in (nodes_to_exclude or [])]
    inits = {i.name for i in src.graph.initializer}
    inp = next(i for i in src.graph.input if i.name not in inits)  # IR 3 lists initializers as inputs too
    input_name = inp.name
    nchw = is_nchw([d.dim_value or None for d in inp.type.tensor_type.shape.dim])
    with scratch_dir("onnxq") as tmp:
        pre = tmp / "pre.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=False)
        pre_nodes = onnx.load(str(pre)).graph.node
        if recipe.float_first_conv:  # nodes are in topological order: up to the first Conv is the input's path
            first = next((i for i, n in enumerate(pre_nodes) if n.op_type == "Conv"), -1)
            exclude += [n.name for n in pre_nodes[:first + 1]]
        exclude += [n.name for n in pre_nodes if n.op_type in recipe.float_op_types]
        if exclude:
            exclude = _resolve_exclude(exclude, {n.name for n in src.graph.node},
                                       {n.name for n in pre_nodes}, fp32_path.name)
        q = tmp / "q.onnx"
        quantize_static(str(pre), str(q), _reader(input_name, calib, nchw),
                        quant_format=getattr(QuantFormat, recipe.quant_format), per_channel=recipe.per_channel,
                        activation_type=getattr(QuantType, QUANT_TYPES[recipe.activations]),
                        weight_type=getattr(QuantType, QUANT_TYPES[recipe.weights]),
                        nodes_to_exclude=exclude or None,
                        calibrate_method=getattr(CalibrationMethod, recipe.calibrate_method),
                        extra_options=_extra_options(recipe, int16_tensors))
        model = onnx.load(str(q))
        present = {p.key for p in model.metadata_props}
        for p in src.metadata_props:
            if p.key not in present:
                entry = model.metadata_props.add()
                entry.key, entry.value = p.key, p.value
        onnx.save(model, str(q))
        return copy_file(q, out_path)


def _extra_options(recipe: OnnxRecipe, int16_tensors: list[str] | None) -> dict:
    from onnxruntime.quantization import QuantType

    extra: dict = {}
    if recipe.calibrate_method == "Percentile":
        extra["CalibPercentile"] = 99.999
    if int16_tensors:
        extra["TensorQuantOverrides"] = {t: [{"quant_type": QuantType.QInt16}] for t in int16_tensors}
    if int16_tensors or recipe.activations == "int16":
        extra["UseQDQContribOps"] = True  # int16 Q/DQ below opset 21: the com.microsoft ops
    return extra
