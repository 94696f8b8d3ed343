"""ONNX int8 (QDQ) per-node error: the ONNX equivalent of the TFLite QuantizationDebugger.

Every activation QuantizeLinear -> DequantizeLinear pair in the QDQ model is exposed as graph
outputs (its float input and its dequantized output), the model runs on the calibration batch,
and each pair's error is the local quantization error of that tensor. The float value is first
clipped to the pair's representable range: the quantizer folds a following Relu into the range
(zero point at the minimum), so clipping there is intended, not error; what remains is rounding
and resolution loss. The node that produced the tensor and the nodes that read it (QDQ-graph
names, which `quantize_onnx(nodes_to_exclude=...)` accepts) are what the fix keeps float.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeproof.parity.layer_error import LayerError, channel_snr_db, judge, keras_layer_of, rank, rmse_scale


def _scalar(init: dict, name: str) -> float | None:
    arr = init.get(name)
    if arr is None or arr.size != 1:
        return None
    return float(arr.reshape(-1)[0])


_QRANGE = {np.dtype(np.int8): (-128, 127), np.dtype(np.uint8): (0, 255), np.dtype(np.int16): (-32768, 32767),
           np.dtype(np.uint16): (0, 65535)}


def _range(init: dict, q) -> tuple[float, float] | None:
    """Float interval a QuantizeLinear can represent (None when scale/zero point are not constants)."""
    scale = _scalar(init, q.input[1])
    zp_arr = init.get(q.input[2]) if len(q.input) > 2 else None
    if scale is None:
        return None
    zp = float(zp_arr.reshape(-1)[0]) if zp_arr is not None and zp_arr.size == 1 else 0.0
    lo, hi = _QRANGE.get(zp_arr.dtype if zp_arr is not None else np.dtype(np.uint8), (0, 255))
    return (lo - zp) * scale, (hi - zp) * scale


def _in_layout(calib: np.ndarray, shape: list) -> np.ndarray:
    """The NHWC calibration batch as the model takes it: transposed for an NCHW input (an ONNX source exported
    from PyTorch keeps its layout in its ONNX artifacts)."""
    from edgeproof.convert.onnx_quant import is_nchw

    nchw = is_nchw([d if isinstance(d, int) else None for d in shape])
    return np.ascontiguousarray(calib.transpose(0, 3, 1, 2) if nchw else calib, dtype=np.float32)


def layer_errors(qdq_path: str | Path, calib: np.ndarray, layer_names: list[str],
                 tensor_layers: dict[str, str] | None = None) -> list[LayerError]:
    """Per-tensor error of every quantized activation, worst first (names are QDQ/fp32 node names).
    tensor_layers: tensor name -> the layer that makes it (an ONNX source's producer nodes: the quantizer's
    pre-processing fuses and renames nodes, a tensor keeps its name)."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    model = onnx.load(str(qdq_path))
    g = model.graph
    init = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    pairs = []  # (tensor, dq_output, scale, representable range, producer node, consumer nodes)
    for q in g.node:
        if q.op_type != "QuantizeLinear" or q.input[0] in init:
            continue
        src = q.input[0]
        dqs = [d for d in consumers.get(q.output[0], []) if d.op_type == "DequantizeLinear"]
        if not dqs or src not in producer or producer[src].op_type == "DequantizeLinear":
            continue
        readers = [c for d in dqs for c in consumers.get(d.output[0], [])]
        pairs.append((src, dqs[0].output[0], _scalar(init, q.input[1]), _range(init, q), producer[src], readers))
    if not pairs:
        return []
    existing = {o.name for o in g.output}
    for name in {n for p in pairs for n in p[:2]} - existing:
        g.output.append(onnx.helper.make_empty_tensor_value_info(name))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    out_names = [o.name for o in sess.get_outputs()]
    inp = sess.get_inputs()[0].name
    x = _in_layout(calib, sess.get_inputs()[0].shape)
    acc: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {p[0]: [] for p in pairs}
    for i in range(len(x)):
        res = dict(zip(out_names, sess.run(out_names, {inp: x[i:i + 1]})))
        for src, dq, *_ in pairs:
            acc[src].append((res[src], res[dq]))

    out = []
    for src, _dq, scale, rng, prod, readers in pairs:
        f = np.concatenate([a for a, _ in acc[src]])
        d = np.concatenate([b for _, b in acc[src]])
        if rng is not None:
            f = np.clip(f, rng[0], rng[1])
        exclude = [n.name for n in [prod, *readers] if n.name and n.op_type not in ("QuantizeLinear",
                                                                                     "DequantizeLinear")]
        le = LayerError(tensor=src, op=prod.op_type, layer=(tensor_layers or {}).get(src) or keras_layer_of(prod.name or src, layer_names),
                        rmse_scale=rmse_scale(f, d, scale), channel_snr_db=channel_snr_db(f, d), scale=scale,
                        exclude=list(dict.fromkeys(exclude)))
        out.append(judge(le))
    return rank(out)


def tensor_sqnr(qdq_path: str | Path, fp32_path: str | Path, calib: np.ndarray) -> dict[str, float]:
    """SQNR (dB) of every quantized activation, from onnxruntime's own `qdq_loss_debug`: the float model's
    tensor vs the QDQ model's dequantized one (or the tensor before vs after its Q/DQ pair when the float
    model no longer has that name), on the calibration images."""
    import tempfile

    from onnxruntime.quantization import qdq_loss_debug as dbg

    from edgeproof.convert.onnx_quant import _reader, is_nchw

    def reader(path):
        import onnx

        inp = onnx.load(str(path)).graph.input[0]
        return _reader(inp.name, calib, is_nchw([d.dim_value or None for d in inp.type.tensor_type.shape.dim]))

    with tempfile.TemporaryDirectory() as tmp:
        aug_q, aug_f = Path(tmp) / "q.onnx", Path(tmp) / "f.onnx"
        dbg.modify_model_output_intermediate_tensors(str(qdq_path), str(aug_q))
        dbg.modify_model_output_intermediate_tensors(str(fp32_path), str(aug_f))
        q_act = dbg.collect_activations(str(aug_q), reader(qdq_path), execution_providers=["CPUExecutionProvider"])
        f_act = dbg.collect_activations(str(aug_f), reader(fp32_path), execution_providers=["CPUExecutionProvider"])
    errors = dbg.compute_activation_error(dbg.create_activation_matching(q_act, f_act))
    out = {}
    for name, e in errors.items():
        v = e.get("xmodel_err", e.get("qdq_err"))
        if v is not None and np.isfinite(v):
            out[name] = float(v)
    return out
