"""ONNX int8 (QDQ) per-node error: the ONNX equivalent of the TFLite QuantizationDebugger.

Every activation QuantizeLinear -> DequantizeLinear pair in the QDQ model is exposed as graph
outputs (its float input and its dequantized output), the model runs on the calibration batch,
and each pair's error is the local quantization error of that tensor. The node that produced
the tensor and the nodes that read it are what `quantize_onnx(nodes_to_exclude=...)` keeps float.
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


def layer_errors(qdq_path: str | Path, calib: np.ndarray, layer_names: list[str],
                 fp32_path: str | Path | None = None) -> list[LayerError]:
    """Per-tensor error of every quantized activation, worst first (names are QDQ/fp32 node names)."""
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
    fp32_nodes = None
    if fp32_path is not None:
        fp32_nodes = {n.name for n in onnx.load(str(fp32_path), load_external_data=False).graph.node}

    pairs = []  # (tensor, dq_output, scale, producer node, consumer nodes)
    for q in g.node:
        if q.op_type != "QuantizeLinear" or q.input[0] in init:
            continue
        src = q.input[0]
        dqs = [d for d in consumers.get(q.output[0], []) if d.op_type == "DequantizeLinear"]
        if not dqs or src not in producer or producer[src].op_type == "DequantizeLinear":
            continue
        readers = [c for d in dqs for c in consumers.get(d.output[0], [])]
        pairs.append((src, dqs[0].output[0], _scalar(init, q.input[1]), producer[src], readers))
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
    acc: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {p[0]: [] for p in pairs}
    for i in range(len(calib)):
        res = dict(zip(out_names, sess.run(out_names, {inp: calib[i:i + 1].astype(np.float32)})))
        for src, dq, *_ in pairs:
            acc[src].append((res[src], res[dq]))

    out = []
    for src, _dq, scale, prod, readers in pairs:
        f = np.concatenate([a for a, _ in acc[src]])
        d = np.concatenate([b for _, b in acc[src]])
        exclude = [n.name for n in [prod, *readers] if n.name and n.op_type not in ("QuantizeLinear",
                                                                                     "DequantizeLinear")]
        if fp32_nodes is not None:
            exclude = [n for n in exclude if n in fp32_nodes]
        le = LayerError(tensor=src, op=prod.op_type, layer=keras_layer_of(prod.name or src, layer_names),
                        rmse_scale=rmse_scale(f, d, scale), channel_snr_db=channel_snr_db(f, d), scale=scale,
                        exclude=list(dict.fromkeys(exclude)))
        out.append(judge(le))
    return rank(out)
