"""Loading a Keras model someone else saved: .keras, legacy .h5 (checked to be HDF5), or a SavedModel folder.

A SavedModel's serving signature is wrapped in a one-input Keras model (keras.layers.TFSMLayer) so that
convert, parity and triage treat every kind alike; its graph's op names are returned too, since it has no
layers to read its preprocessing from.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import numpy as np

from edgeproof.errors import UsageError
from edgeproof.train.run_dir import PREPROCESS_FILE

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
GIVE = "give a run folder from 'edgeproof train', a .keras, .h5 or .onnx file, or a SavedModel folder"


def model_kind(path: Path) -> str:
    """'run', 'keras', 'h5', 'savedmodel' or 'onnx' from what is on disk (UsageError when it is none of them)."""
    if not path.exists():
        raise UsageError(f"model '{path}' does not exist; {GIVE}")
    if path.is_dir():
        if any((path / f).is_file() for f in SAVED_MODEL_FILES):
            return "savedmodel"
        return "run"  # load_run names what the folder lacks
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return "onnx"
    if suffix == ".keras":
        return "run" if (path.parent / PREPROCESS_FILE).is_file() else "keras"
    if suffix in (".h5", ".hdf5"):
        with open(path, "rb") as f:
            if f.read(8) != HDF5_MAGIC:
                raise UsageError(f"'{path}' is not an HDF5 file (a legacy Keras .h5 model starts with the HDF5 "
                                 "signature); give the file model.save('model.h5') wrote, or a .keras file")
        return "h5"
    raise UsageError(f"'{path}' has suffix '{path.suffix}', which is no Keras model format; {GIVE} "
                     "(give the folder 'edgeproof train -o' wrote, or its model.keras)")


def load_model(path: str | Path, kind: str, what: str = "this command", trust_model: bool = False):
    """A Keras model from a .keras/.h5 file or a SavedModel folder (wrapped in a one-input Keras model)."""
    return load_with_ops(Path(path), kind, what, trust_model)[0]


def load_with_ops(path: Path, kind: str, what: str, trust_model: bool = False) -> tuple[Any, list[str]]:
    """(Keras model, op names of a SavedModel's graph: how its in-graph preprocessing is found).

    A model is a program: .keras/.h5 load in Keras' safe mode (no Lambda bytecode, no TFSMLayer) and a
    SavedModel's graph is scanned before TensorFlow loads it (convert.saved_model_scan), unless trust_model."""
    from edgeproof.train.run_dir import keras_load_reason, load_keras_model
    from edgeproof.train.tf_quiet import import_tensorflow

    if kind == "onnx":  # onnxruntime on the source file, called like a Keras model (convert.onnx_source)
        from edgeproof.convert.onnx_source import OnnxSource

        return OnnxSource(path), []
    if kind in ("run", "keras"):
        return load_keras_model(path, what, trust_model), []
    import_tensorflow(what)
    import keras

    try:
        if kind == "h5":
            return keras.saving.load_model(str(path), compile=False, safe_mode=not trust_model), []
        from edgeproof.convert.saved_model_scan import check_saved_model

        check_saved_model(path, trust_model)  # before tf.saved_model.load: loading already runs initializers
        return _wrap_saved_model(path)
    except UsageError:
        raise
    except Exception as exc:  # a damaged or foreign file: one line  # noqa: BLE001
        raise UsageError(f"cannot load {kind} model '{path}': {keras_load_reason(exc)}; {GIVE}") from None


def _wrap_saved_model(path: Path) -> tuple[Any, list[str]]:
    """A SavedModel's serving signature as a Keras model; refuses several inputs/outputs by name."""
    import keras
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    sigs = dict(getattr(loaded, "signatures", {}) or {})
    if not sigs:
        raise UsageError(f"SavedModel '{path}' has no serving signature; export it with model.export(dir) or "
                         "tf.saved_model.save(model, dir, signatures=...)")
    endpoint = "serving_default" if "serving_default" in sigs else sorted(sigs)[0]
    fn = sigs[endpoint]
    inputs = fn.structured_input_signature[1]
    outputs = fn.structured_outputs
    if len(inputs) != 1:
        raise UsageError(f"SavedModel '{path}' has {len(inputs)} inputs ({', '.join(sorted(inputs))}); edgeproof "
                         "converts image classifiers with one (N, H, W, 3) image input")
    if len(outputs) != 1:
        raise UsageError(f"SavedModel '{path}' has {len(outputs)} outputs ({', '.join(sorted(outputs))}); edgeproof "
                         "converts classifiers with one (N, classes) output")
    spec = next(iter(inputs.values()))
    out_key = next(iter(outputs))
    if spec.dtype != tf.float32:
        raise UsageError(f"SavedModel '{path}' input '{spec.name}' is {spec.dtype.name}; edgeproof feeds float32 "
                         "pixels (N, H, W, 3)")
    inp = keras.Input(tuple(spec.shape[1:]), name="image")
    out = keras.layers.TFSMLayer(str(path), call_endpoint=endpoint, name="saved_model")(inp)
    model = keras.Model(inp, out[out_key] if isinstance(out, dict) else out, name=re.sub(r"\W", "_", path.name))
    return model, _graph_op_names(fn)


def _graph_op_names(fn) -> list[str]:
    names = [n.name for n in fn.graph.as_graph_def().node]
    for f in fn.graph.as_graph_def().library.function:
        names += [n.name for n in f.node_def]
    return names


def image_shape(shape: list, what: str, path: Path, channels: int | None = None, layout: str | None = "NHWC"
                ) -> tuple[int | None, int | None, int]:
    """(H, W, C) of an (N, H, W, C) image input (C: 1 gray, 3 color, 4 color + alpha, or --channels `channels`),
    else one line naming the shape (contract.image_layout says why)."""
    from edgeproof.contract import image_layout

    try:
        _, h, w, c = image_layout(shape, channels, layout)
    except ValueError as exc:
        raise UsageError(f"'{path.name}' {what} {exc}, which is not an image batch edgeproof converts") from None
    return h, w, c


def source_sha256(path: str | Path) -> str:
    """sha256 of a model file, or of a SavedModel folder (every file's relative path and bytes, sorted)."""
    from edgeproof.runtime.integrity import sha256_file

    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        h.update(str(p.relative_to(path)).encode() + b"\0" + bytes.fromhex(sha256_file(p)))
    return h.hexdigest()


def class_scores_of(model, x: np.ndarray, head: str, batch_size: int = 64) -> np.ndarray:
    """float32 (N, C) class scores of a loaded Keras model: the model called directly (no Keras predict-loop
    overhead), its output turned into one score per class as the runtime does (contract.class_scores: softmax
    of logits, a binary sigmoid's [1 - p, p]). Used by convert's int8 search and by parity's reference."""
    from edgeproof.contract import class_scores

    outs = [np.asarray(model(x[i:i + batch_size], training=False), dtype=np.float32)
            for i in range(0, len(x), batch_size)]
    out = np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)
    if out.ndim != 2:
        out = out.reshape(len(x), -1)
    return class_scores(out, head) if len(out) else out

