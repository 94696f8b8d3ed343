"""The onnx package's bundled light_* ImageNet models (real architectures nobody here wrote), given seeded weights.

onnx ships them as `onnx/backend/test/data/light/light_<name>.onnx` (4 KB - 212 KB): the graph of each
network with every weight a ConstantOfShape of 0.02, so every image scores every class alike. `seeded()`
replaces each of those constants with a seeded random tensor of the same shape (He-scaled signed values for
conv/gemm weights, [0.5, 1.5] for batch-norm scales and variances, N(0, 0.1) for biases and shifts): the same
graph, now with outputs that depend on the image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def light_path(name: str) -> Path:
    """onnx's light_<name>.onnx, or skip when this onnx build does not ship it."""
    onnx = pytest.importorskip("onnx")
    path = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / f"light_{name}.onnx"
    if not path.is_file():
        pytest.skip(f"onnx {onnx.__version__} does not ship {path.name}")
    return path


def seeded(name: str, dest: Path, seed: int = 0, output: str | None = None) -> Path:
    """light_<name>.onnx with seeded weights, saved at `dest`; `output`: make that tensor the only output."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(light_path(name)))
    g = model.graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    weights_of = {n.input[1] for n in g.node if n.op_type in ("Conv", "Gemm") and len(n.input) > 1}
    positive = {n.input[i] for n in g.node if n.op_type == "BatchNormalization" for i in (1, 4)}  # scale, var
    rng = np.random.default_rng(seed)
    keep, made = [], []
    for node in g.node:
        if node.op_type != "ConstantOfShape" or node.input[0] not in inits:
            keep.append(node)
            continue
        shape = tuple(int(d) for d in inits[node.input[0]])
        if node.output[0] in weights_of:
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
            value = rng.normal(0.0, np.sqrt(2.0 / max(fan_in, 1)), shape)
        elif node.output[0] in positive:
            value = rng.uniform(0.5, 1.5, shape)
        else:  # biases, batch-norm shifts and means
            value = rng.normal(0.0, 0.1, shape)
        made.append(numpy_helper.from_array(value.astype(np.float32), node.output[0]))
    del g.node[:]
    g.node.extend(keep)
    g.initializer.extend(made)
    if output is not None:
        info = next((v for v in g.value_info if v.name == output), None)
        del g.output[:]
        g.output.append(info or helper.make_tensor_value_info(output, onnx.TensorProto.FLOAT, None))
    model.ir_version = max(model.ir_version, 4)  # IR 4: initializers need not be listed as graph inputs
    onnx.save(model, str(dest))
    return dest


def ort_scores(path: Path, x_nchw: np.ndarray) -> np.ndarray:
    """The model's own output for an NCHW float32 batch, by onnxruntime, flattened to (N, units)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = sess.run(None, {sess.get_inputs()[0].name: x_nchw.astype(np.float32)})[0]
    return out.reshape(len(out), -1)
