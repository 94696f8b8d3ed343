"""Tiny trained Keras model + its own conversions, for the runtime tests (independent of train/convert).

Built once per test process (memoized): a 32x32 RGB 3-class CNN trained for a few epochs on a
procedural dataset (the dominant colour of a noisy blob decides the class), converted to TFLite
fp32 / int8 (int8 I/O) / uint8 I/O, ONNX fp32 (NHWC, tf2onnx) and an NCHW ONNX variant (a
Transpose in front). Some files carry edgeproof metadata, some are bare ("made elsewhere").
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SIZE = 32
LABELS = ["red", "green", "blue"]
_CACHE: dict[str, TinyModels] = {}


@dataclass
class TinyModels:
    root: Path
    images: list[Path]  # PNG test images (never seen in training)
    keras_top1: dict[str, int]  # image path -> Keras argmax on the OpenCV-decoded pixels
    keras_probs: dict[str, np.ndarray]
    files: dict[str, Path] = field(default_factory=dict)


def make_image(rng: np.random.Generator, cls: int, size: int = SIZE) -> np.ndarray:
    """RGB uint8: noisy background + a blob whose dominant channel is the class."""
    img = rng.integers(0, 90, size=(size, size, 3)).astype(np.float32)
    cy, cx = rng.integers(size // 4, 3 * size // 4, size=2)
    r = rng.integers(size // 5, size // 3)
    yy, xx = np.mgrid[:size, :size]
    mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    colour = rng.integers(0, 80, size=3).astype(np.float32)
    colour[cls] = rng.integers(170, 256)
    img[mask] = colour
    return np.clip(img, 0, 255).astype(np.uint8)


def _dataset(n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for i in range(n_per_class * 3):
        xs.append(make_image(rng, i % 3))
        ys.append(i % 3)
    return np.stack(xs).astype(np.float32), np.array(ys)


def _meta(fmt: str, input_spec: dict, output_spec: dict):
    from edgeproof.contract import ArtifactMeta, Preprocess, TensorSpec

    return ArtifactMeta(labels=list(LABELS), preprocess=Preprocess(SIZE, SIZE), format=fmt,
                        input=TensorSpec(**input_spec), output=TensorSpec(**output_spec))


def _tflite_spec(data: bytes) -> tuple[dict, dict]:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=data)
    specs = []
    for d in (it.get_input_details()[0], it.get_output_details()[0]):
        scale, zp = d["quantization"]
        q = d["dtype"] in (np.int8, np.uint8)
        specs.append({"name": d["name"], "shape": [None, *map(int, d["shape"][1:])], "dtype": np.dtype(d["dtype"]).name,
                      "scale": float(scale) if q else None, "zero_point": int(zp) if q else None})
    return specs[0], specs[1]


def build(root: Path) -> TinyModels:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import cv2
    import keras
    import tensorflow as tf

    from edgeproof.runtime.metadata import set_onnx_metadata, tflite_with_metadata

    keras.utils.set_random_seed(0)
    x, y = _dataset(60, seed=1)
    model = keras.Sequential([
        keras.Input((SIZE, SIZE, 3)),
        keras.layers.Rescaling(1 / 255.0),
        keras.layers.Conv2D(8, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(16, 3, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(3, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=8, batch_size=32, verbose=0)

    # Test images on disk; Keras reference on exactly the pixels OpenCV decodes (no resize needed).
    rng = np.random.default_rng(7)
    img_dir = root / "images"
    images = []
    for i in range(30):
        sub = img_dir / LABELS[i % 3]
        sub.mkdir(parents=True, exist_ok=True)
        p = sub / f"img_{i:03d}.png"
        cv2.imwrite(str(p), cv2.cvtColor(make_image(rng, i % 3), cv2.COLOR_RGB2BGR))
        images.append(p)
    batch = np.stack([cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in images]).astype(np.float32)
    probs = model.predict(batch, verbose=0)
    out = TinyModels(root, images, {str(p): int(np.argmax(v)) for p, v in zip(images, probs)},
                     {str(p): v for p, v in zip(images, probs)})

    fn = tf.function(lambda t: model(t, training=False),
                     input_signature=[tf.TensorSpec((None, SIZE, SIZE, 3), tf.float32, name="image")])

    def tflite(io_type=None, weights=None):
        conv = tf.lite.TFLiteConverter.from_keras_model(model)
        if weights is not None:  # tflite-fp16 (float16 weights) or tflite-dynamic (int8 weights, float math)
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            if weights == "fp16":
                conv.target_spec.supported_types = [tf.float16]
        if io_type is not None:
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.representative_dataset = lambda: ([x[i:i + 1]] for i in range(0, len(x), 2))
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            conv.inference_input_type = io_type
            conv.inference_output_type = io_type
        return conv.convert()

    for key, fmt, io in (("fp32", "tflite-fp32", None), ("int8", "tflite-int8", tf.int8),
                         ("uint8", "edgetpu", tf.uint8)):
        data = tflite(io)
        (root / f"bare.{key}.tflite").write_bytes(data)
        out.files[f"bare-{key}"] = root / f"bare.{key}.tflite"
        ins, outs = _tflite_spec(data)
        p = root / f"model.{fmt}.tflite"
        p.write_bytes(tflite_with_metadata(data, _meta(fmt, ins, outs)))
        out.files[fmt] = p
    for fmt, weights in (("tflite-fp16", "fp16"), ("tflite-dynamic", "int8")):
        data = tflite(weights=weights)
        ins, outs = _tflite_spec(data)
        p = root / f"model.{fmt}.tflite"
        p.write_bytes(tflite_with_metadata(data, _meta(fmt, ins, outs)))
        out.files[fmt] = p

    import onnx
    import tf2onnx

    proto, _ = tf2onnx.convert.from_function(fn, input_signature=fn.input_signature, opset=17)
    onnx.save(proto, str(root / "bare.onnx"))
    out.files["bare-onnx"] = root / "bare.onnx"
    in_name, out_name = proto.graph.input[0].name, proto.graph.output[0].name
    set_onnx_metadata(proto, _meta("onnx-fp32", {"name": in_name, "shape": [None, SIZE, SIZE, 3], "dtype": "float32"},
                                   {"name": out_name, "shape": [None, 3], "dtype": "float32"}))
    onnx.save(proto, str(root / "model.onnx-fp32.onnx"))
    out.files["onnx-fp32"] = root / "model.onnx-fp32.onnx"
    out.files["nchw-onnx"] = _nchw_variant(root / "bare.onnx", root / "bare.nchw.onnx")
    return out


def _nchw_variant(src: Path, dest: Path) -> Path:
    """The same network taking NCHW input: a Transpose(0,2,3,1) in front, no metadata."""
    import onnx
    from onnx import helper

    m = onnx.load(str(src))
    g = m.graph
    old = g.input[0]
    old_name = old.name
    dims = [d.dim_value or d.dim_param for d in old.type.tensor_type.shape.dim]
    for node in g.node:
        for i, name in enumerate(node.input):
            if name == old_name:
                node.input[i] = "nhwc_from_nchw"
    g.node.insert(0, helper.make_node("Transpose", ["image_nchw"], ["nhwc_from_nchw"], perm=[0, 2, 3, 1]))
    new_in = helper.make_tensor_value_info("image_nchw", onnx.TensorProto.FLOAT,
                                           [dims[0] or "N", dims[3], dims[1], dims[2]])
    g.input.remove(old)
    g.input.insert(0, new_in)
    onnx.checker.check_model(m)
    onnx.save(m, str(dest))
    return dest


def tiny_models() -> TinyModels:
    """Build (once per process) and return the tiny models."""
    if "m" not in _CACHE:
        root = Path(tempfile.mkdtemp(prefix="edgeproof-rt-"))
        atexit.register(shutil.rmtree, root, True)
        _CACHE["m"] = build(root)
    return _CACHE["m"]


if __name__ == "__main__":  # dev helper: python tests/_runtime_models.py /tmp/dir
    import sys

    d = Path(sys.argv[1])
    d.mkdir(parents=True, exist_ok=True)
    m = build(d)
    np.save(d / "keras_top1.npy", np.array([m.keras_top1[str(p)] for p in m.images]))
    print({k: str(v) for k, v in m.files.items()})


def color_onnx(path: Path, size: int = 8, labels: list[str] | None = None, with_meta: bool = True) -> Path:
    """A TF-free ONNX 'classifier' (needs only the onnx package): softmax(0.1 * mean RGB over H, W).

    A solid image's top-1 is its dominant channel, so pipeline tests know every expected answer.
    """
    import onnx
    from onnx import TensorProto, helper

    from edgeproof.contract import ArtifactMeta, Preprocess, TensorSpec
    from edgeproof.runtime.metadata import set_onnx_metadata

    nodes = [
        helper.make_node("ReduceMean", ["image"], ["m"], axes=[1, 2], keepdims=0),
        helper.make_node("Mul", ["m", "k"], ["z"]),
        helper.make_node("Softmax", ["z"], ["probs"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "color", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", size, size, 3])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 3])],
        initializer=[helper.make_tensor("k", TensorProto.FLOAT, [], [0.1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if with_meta:
        set_onnx_metadata(model, ArtifactMeta(
            labels=list(labels or LABELS), preprocess=Preprocess(size, size), format="onnx-fp32",
            input=TensorSpec("image", [None, size, size, 3], "float32"),
            output=TensorSpec("probs", [None, 3], "float32")))
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


SOLID_BGR = {"red": (0, 0, 255), "green": (0, 255, 0), "blue": (255, 0, 0)}


def solid(name: str, h: int = 24, w: int = 20) -> np.ndarray:
    """A BGR uint8 frame filled with one of the LABELS colours."""
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = SOLID_BGR[name]
    return img
