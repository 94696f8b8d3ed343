"""convert.onnx_fold: per-channel Mul/Add after a Conv folded into it (what onnx2tf 1.29.24 mis-broadcasts), exactly,
and only where the algebra holds: a constant of another shape, or a tensor read twice, is left alone."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _model():
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    c = 4

    def const(name, arr):
        return numpy_helper.from_array(np.asarray(arr, np.float32), name)

    inits = [const("w1", rng.normal(size=(c, 3, 3, 3))), const("b1", rng.normal(size=c)),
             const("s1", rng.uniform(0.5, 2, (1, c, 1, 1))), const("t1", rng.normal(size=(1, c, 1, 1))),
             const("w2", rng.normal(size=(c, 1, 3, 3))), const("s2", [0.5]),
             const("w3", rng.normal(size=(c, c, 1, 1))), const("row", rng.normal(size=(1, 1, 1, 8)))]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),   # Conv + BN-like Mul/Add
             helper.make_node("Mul", ["c1", "s1"], ["m1"]), helper.make_node("Add", ["m1", "t1"], ["a1"]),
             helper.make_node("Relu", ["a1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], group=c, pads=[1, 1, 1, 1]),  # depthwise, no bias
             helper.make_node("Mul", ["c2", "s2"], ["m2"]),                                # scalar: folds
             helper.make_node("Conv", ["m2", "w3"], ["c3"]),
             helper.make_node("Mul", ["c3", "row"], ["m3"]),          # one value per column, not per channel
             helper.make_node("Add", ["m3", "m2"], ["y"])]            # m2 read twice: its Conv output stays
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, 8, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _run(model, x):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_conv_mul_add_fold_exactly_and_only_where_per_channel():
    from edgeproof.convert.onnx_fold import fold_conv_affine

    model = _model()
    x = np.random.default_rng(1).normal(size=(1, 3, 8, 8)).astype(np.float32)
    want = _run(model, x)
    assert fold_conv_affine(model) == 2  # the first Conv took Mul+Add, the depthwise one the scalar Mul
    ops = Counter(n.op_type for n in model.graph.node)
    assert ops == {"Conv": 3, "Relu": 1, "Mul": 1, "Add": 1}, ops  # the (1,1,1,8) Mul and the residual Add stay
    onnx.checker.check_model(model)
    np.testing.assert_allclose(_run(model, x), want, rtol=1e-5, atol=1e-5)
