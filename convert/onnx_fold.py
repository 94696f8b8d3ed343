"""Fold per-channel constant Mul/Add that follow a Conv into the Conv's weights and bias (for onnx2tf).

tf2onnx's NCHW exports of Keras 3 models keep BatchNorm as Conv -> Mul(1, C, 1, 1) -> Add(1, C, 1, 1) (Keras 3
does not emit a fused batch-norm op). onnx2tf 1.29.24 (the last release for Python 3.11) turns such a constant
into a tensor in `shape_unmatched_special_avoidance_workaround`, `explicit_broadcast` then leaves it channel-first,
and the conversion ends in "Dimensions must be equal ... [?,16,16,32], [1,1,32,1]" (the zoo's MobileNet and
MobileNetV3Small exports; fixed upstream in PINTO0309/onnx2tf#836, in releases that need a newer Python).
Folding is exact algebra, the rewrite onnxruntime itself applies (ConvMulFusion, ConvAddFusion):
Conv(x, W, b) * s + t = Conv(x, W * s, b * s + t) for constants s, t with one value per output channel.
It is applied only to the copy handed to onnx2tf; the user's file stays the reference.
"""

from __future__ import annotations

import numpy as np


def _per_channel(value: np.ndarray, cout: int) -> np.ndarray | None:
    """The constant as one value per output channel, or None when it broadcasts any other way."""
    if value.size == 1:
        return np.full(cout, float(value.reshape(-1)[0]))
    if value.size == cout and value.shape in ((1, cout, 1, 1), (cout, 1, 1)):
        return value.reshape(cout).astype(np.float64)
    return None


def fold_conv_affine(proto) -> int:
    """Fold, in place, every chain Conv -> Mul/Add(constant per output channel) whose intermediate tensors have
    one reader and are not graph outputs; returns how many Convs absorbed at least one op."""
    from onnx import numpy_helper

    g = proto.graph
    init = {i.name: i for i in g.initializer}
    readers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    graph_outputs = {o.name for o in g.output}
    removed, folded = [], 0
    for conv in g.node:
        if conv.op_type != "Conv" or len(conv.input) < 2 or conv.input[1] not in init:
            continue
        has_bias = len(conv.input) > 2 and bool(conv.input[2])
        if has_bias and conv.input[2] not in init:
            continue
        w = numpy_helper.to_array(init[conv.input[1]]).astype(np.float64)
        cout = w.shape[0]
        b = numpy_helper.to_array(init[conv.input[2]]).astype(np.float64) if has_bias else np.zeros(cout)
        out, changed = conv.output[0], False
        while out not in graph_outputs and len(readers.get(out, [])) == 1:
            op = readers[out][0]
            other = [i for i in op.input if i != out]
            if op.op_type not in ("Mul", "Add") or len(op.input) != 2 or len(other) != 1 or other[0] not in init:
                break
            c = _per_channel(numpy_helper.to_array(init[other[0]]), cout)
            if c is None:
                break
            if op.op_type == "Mul":
                w, b = w * c.reshape(-1, *([1] * (w.ndim - 1))), b * c
            else:
                b = b + c
            removed.append(op)
            out, changed = op.output[0], True
        if changed:
            folded += 1
            conv.output[0] = out
            wname, bname = f"{out}__folded_w", f"{out}__folded_b"
            g.initializer.extend([numpy_helper.from_array(w.astype(np.float32), wname),
                                  numpy_helper.from_array(b.astype(np.float32), bname)])
            conv.input[1] = wname
            if len(conv.input) > 2:
                conv.input[2] = bname
            else:
                conv.input.append(bname)
    for op in removed:
        g.node.remove(op)
    return folded
