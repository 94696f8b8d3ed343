"""A hand-built ONNX classifier (no TensorFlow needed) with an exact NumPy reference, for device tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

H, W, C, CLASSES = 8, 8, 3, 3


def build_linear_onnx(path: Path) -> tuple[Path, Callable[[np.ndarray], np.ndarray]]:
    """image (N,8,8,3) -> Flatten -> Gemm -> Softmax, dynamic batch; returns (path, reference)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.05, size=(H * W * C, CLASSES)).astype(np.float32)
    b = np.array([0.1, -0.2, 0.05], np.float32)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["image"], ["flat"], axis=1),
         helper.make_node("Gemm", ["flat", "w", "b"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probs"], axis=1)],
        "linear", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", H, W, C])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", CLASSES])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))

    def reference(x: np.ndarray) -> np.ndarray:
        z = x.reshape(len(x), -1).astype(np.float64) @ w + b
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)

    return path, reference


def random_batch(n: int = 5, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, size=(n, H, W, C)).astype(np.float32)
