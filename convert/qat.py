"""Quantization-aware fine-tuning (QAT): the last rung of convert's escalation ladder (issue 22 item 7).

Post-training quantization rounds the float weights as they are. Where the recipe must keep the first
convolution integer (edgetpu: every op int8 for the Edge TPU; tflite-int16x8: int8 weights) its BN-folded int8
weights on 0..1 input cost 2-4 of 192 test images on some seeds of shapes, although the 40 held-out calibration
images all agree. QAT trains the weights a short while *through* simulated int8 (fake-quantized weights per
channel and activations), so they settle where rounding costs little; the format's own recipe then converts the
fine-tuned float weights exactly as it converts any model (same converter, calibration, I/O, file name).

The stack: tensorflow-model-optimization 0.8 on a tf_keras rebuild of the Keras 3 model (convert.tf_keras_model). Keras 3's
own `Model.quantize()` is no QAT for these models: keras 3.15 quantizes Dense/EinsumDense/Embedding only
("Conv2D does not have a `quantize` method"), and the int8 Dense it makes does not convert to TFLite
('tfl.fully_connected' op operand #0 ... got 'tensor<1x4xi8>').

The objective is what parity measures: distillation toward the float model's own outputs (KL divergence on
probabilities, mean squared error on other heads), on labeled training images only (the run's train split or
--calib-data with class subfolders, class-stratified), never the held-out images that judge it. BatchNorm is
frozen (its statistics are the float model's, as the converter folds them). Layers tfmot's default 8-bit
registry does not cover (Rescaling among them: it folds into the input's scale) stay float in the simulation. Seeded and deterministic on one
machine (Keras/NumPy/TF seeds, op determinism for the fine-tune), bounded: QAT_EPOCHS over at most
QAT_MAX_IMAGES images (and QAT_MAX_BYTES of them), stopped at QAT_MAX_SECONDS (recorded: a stop by time is not
reproducible).
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeproof.convert.quant_search import Candidate

log = logging.getLogger(__name__)

# shapes seeds 2 and 4, edgetpu (tflite-converter on the fine-tuned weights), 192 validation / 192 test images:
# post-training 191/188 and 191/188; 2 epochs 191/187 and 191/192; 5 epochs 191/190 (38.8 dB on validation
# against 37.0) and 192/191. Only 5 epochs ranks above post-training on both validation splits.
QAT_EPOCHS = 5
QAT_LR = 1e-4
QAT_BATCH = 32
QAT_MAX_IMAGES = 1000
QAT_MAX_BYTES = 256 << 20
QAT_MAX_SECONDS = 180.0
PIP_LINE = ("pip install 'edgeproof[qat]' && pip install --no-deps 'tensorflow-model-optimization==0.8.1' "
            "'tf-keras>=2.21,<2.22'")


def missing() -> str | None:
    """Why QAT cannot run here (a missing package, with the pip line), or None."""
    import importlib.util

    for mod, dist in (("tensorflow_model_optimization", "tensorflow-model-optimization"), ("tf_keras", "tf-keras")):
        if importlib.util.find_spec(mod) is None:
            return f"{dist} is not installed ({PIP_LINE})"
    return None


@dataclass
class QatData:
    images: np.ndarray  # (N, H, W, C) float32 in model-input space
    labels: np.ndarray  # class index per image (stratifies the order; the loss is distillation)
    source: str


def labeled_images(source: Any, seed: int = 0, exclude: np.ndarray | None = None) -> QatData | None:
    """The source's labeled training images in class round-robin order (convert.calibration.stratified_order),
    less any image equal to one in `exclude` (the held-out images that judge the result); None when the source
    has no labeled images (no train split, or a --calib-data folder without class subfolders)."""
    from edgeproof.convert.calibration import stratified_order
    from edgeproof.errors import UsageError
    from edgeproof.runtime.preprocess import ImageReadError, load_image

    try:
        items = source.split("train")
    except UsageError:
        return None
    if len({c for _, c in items}) < 2:
        return None
    held = {hashlib.sha256(np.ascontiguousarray(x).tobytes()).digest() for x in (exclude if exclude is not None else [])}
    images, labels, size = [], [], 0
    for path, cls in stratified_order(items, seed):
        if len(images) >= QAT_MAX_IMAGES or size >= QAT_MAX_BYTES:
            break
        try:
            x = np.ascontiguousarray(load_image(path, source.preprocess), dtype=np.float32)
        except ImageReadError:
            continue
        if hashlib.sha256(x.tobytes()).digest() in held:
            continue
        images.append(x)
        labels.append(cls)
        size += x.nbytes
    if len(images) < 2 * QAT_BATCH:
        return None
    where = f"--calib-data {source.calib_dir}" if getattr(source, "calib_dir", None) else "the run's train split"
    return QatData(np.stack(images), np.asarray(labels), f"{len(images)} labeled images of {where}")


@dataclass
class Tuner:
    """One QAT fine-tune of `model`, run on first use and shared by every format's candidate."""

    model: Any
    data: QatData | None  # None once the fine-tune is done
    head: str = "probabilities"
    seed: int = 0
    epochs: int = QAT_EPOCHS
    max_seconds: float = QAT_MAX_SECONDS
    info: dict = field(default_factory=dict)
    _tuned: Any = field(default=None, repr=False)
    _error: Exception | None = field(default=None, repr=False)

    def tuned(self) -> Any:
        """The fine-tuned model; a fine-tune that failed raises the same error for every format, run once."""
        if self._error is not None:
            raise self._error
        if self._tuned is None:
            try:
                self._tuned = fine_tune(self.model, self.data, self.head, self.seed, self.epochs, self.max_seconds,
                                        self.info)
            except Exception as exc:  # noqa: BLE001 - kept and raised again: each candidate's row says why
                self._error = exc
                raise
            # the images are not needed again; the candidates' conversions that follow are convert's peak
            # (the demo's: 54 MiB lower without them)
            self.data = None
        return self._tuned


def fine_tune(model: Any, data: QatData, head: str = "probabilities", seed: int = 0, epochs: int = QAT_EPOCHS,
              max_seconds: float = QAT_MAX_SECONDS, info: dict | None = None) -> Any:
    """A copy of the Keras 3 `model` with weights fine-tuned through simulated int8 (see the module doc); `info`
    gets what was done (stack, images, steps, seconds, whether the time bound stopped it)."""
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras

    from edgeproof.convert.tf_keras_model import keras3_activations, to_tf_keras, weights_back
    from edgeproof.train.trainer import determinism_enabled, disable_determinism

    t0 = time.perf_counter()
    # predict_on_batch over slices of 64: the same compiled step on the same batches as predict(batch_size=64), so
    # the same scores bit for bit, without predict's tf.data copy of every image (44 MiB resident on the demo)
    teacher = np.concatenate([np.asarray(model.predict_on_batch(data.images[i:i + 64]), np.float32)
                              for i in range(0, len(data.images), 64)])
    was = determinism_enabled()
    if not was:
        tf.config.experimental.enable_op_determinism()
    try:
        tf_keras.utils.set_random_seed(int(seed))
        twin = to_tf_keras(model, data.images[:8])
        for layer in twin.layers:
            if isinstance(layer, tf_keras.layers.BatchNormalization):
                layer.trainable = False  # inference-mode BN: the float model's statistics, as the converter folds
        q = tfmot.quantization.keras
        with keras3_activations(), q.quantize_scope():
            qat = q.quantize_apply(tf_keras.models.clone_model(twin, clone_function=_annotator()))
        loss = tf_keras.losses.KLDivergence() if head == "probabilities" else tf_keras.losses.MeanSquaredError()
        qat.compile(tf_keras.optimizers.Adam(QAT_LR), loss)
        stop = _TimeBound(tf_keras, max_seconds)
        hist = qat.fit(data.images, teacher, batch_size=QAT_BATCH, epochs=epochs, shuffle=True, verbose=0,
                       callbacks=[stop])
        tuned = weights_back(model, qat)
    finally:
        if not was:
            disable_determinism()
    if info is not None:
        info.update({"stack": f"tensorflow-model-optimization {tfmot.__version__} + tf_keras {tf_keras.__version__}",
                     "objective": "distillation toward the float model's outputs (BatchNorm frozen)",
                     "images": data.source, "epochs": len(hist.history.get("loss", [])), "batch": QAT_BATCH,
                     "lr": QAT_LR, "seed": int(seed), "final_loss": round(float(hist.history["loss"][-1]), 6),
                     "seconds": round(time.perf_counter() - t0, 1), "stopped_by_time_bound": stop.hit})
    log.info("QAT fine-tune: %s", info)
    return tuned


# tfmot 0.8's Default8BitActivationQuantizeConfig quantizes or passes these activations and raises on any other
# (MobileNetV3's hard_silu): an Activation layer with another function stays float in the simulation.
_TFMOT_ACTIVATIONS = ("relu", "swish", "gelu", "relu6", "linear", "softmax", "sigmoid", "tanh")
_FOLDED_INTO = ("Conv2D", "DepthwiseConv2D")


def _annotator() -> Any:
    """clone_function annotating what tfmot's default 8-bit scheme quantizes; the rest stays float (simulated in
    float, converted by the format's own recipe as any layer): layers outside its registry (Rescaling,
    Normalization, Multiply of squeeze-excite blocks), Activation layers with a function outside
    _TFMOT_ACTIVATIONS, and a BatchNormalization that does not directly follow a convolution (ResNet50V2's
    pre-activation BN: tfmot only folds Conv+BN and refuses a bare BN), which the converter keeps as its own
    mul/add."""
    import tensorflow_model_optimization as tfmot
    import tf_keras
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_registry as registry,
    )

    q = tfmot.quantization.keras
    reg = registry.Default8BitQuantizeRegistry()

    def after_conv(layer: Any) -> bool:
        ins = [n.inbound_layers for n in layer._inbound_nodes]
        ins = [x for group in ins for x in (group if isinstance(group, list) else [group])]
        return len(ins) == 1 and type(ins[0]).__name__ in _FOLDED_INTO and len(ins[0]._outbound_nodes) == 1

    def wrap(layer: Any) -> Any:
        if isinstance(layer, tf_keras.layers.BatchNormalization):
            return q.quantize_annotate_layer(layer) if after_conv(layer) else layer
        if isinstance(layer, tf_keras.layers.Activation) and \
                getattr(layer.activation, "__name__", "") not in _TFMOT_ACTIVATIONS:
            return layer
        return q.quantize_annotate_layer(layer) if reg.supports(layer) else layer

    return wrap


def _TimeBound(tf_keras: Any, max_seconds: float) -> Any:
    class TimeBound(tf_keras.callbacks.Callback):
        """Stops training once `max_seconds` have passed (checked after each batch)."""

        def __init__(self) -> None:
            super().__init__()
            self.t0, self.hit = time.perf_counter(), False

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            if time.perf_counter() - self.t0 > max_seconds:
                self.hit, self.model.stop_training = True, True

    return TimeBound()


def tflite_candidate(fmt_name: str, tuner: Tuner, io_type: str) -> Candidate:
    """The format's own TFLite recipe on the fine-tuned weights."""
    from edgeproof.convert.tflite import to_tflite
    from edgeproof.formats import FORMATS

    opts: dict = {**FORMATS[fmt_name].recipe.options(io_type), "qat": tuner.info}

    def build(x: np.ndarray, dest: Path) -> Path:
        p = dest.with_suffix(".tflite")
        p.write_bytes(to_tflite(tuner.tuned(), fmt_name, calib=x, io_type=io_type))
        return p

    return Candidate("qat fine-tune + tflite-converter", opts, build)


def onnx_candidate(recipe: Any, tuner: Tuner) -> Candidate:
    """The format's own ONNX recipe on an fp32 export of the fine-tuned weights."""
    from edgeproof.convert.int8_recipes import onnx_candidate as recipe_candidate

    opts: dict = {"qat": tuner.info}

    def build(x: np.ndarray, dest: Path) -> Path:
        import onnx

        from edgeproof.convert.onnx_export import to_onnx

        fp32 = dest.with_name(f"{dest.name}-qat-fp32.onnx")
        onnx.save(to_onnx(tuner.tuned()), str(fp32))
        try:
            c = recipe_candidate(fp32, recipe)
            built = c.build(x, dest)
        finally:
            fp32.unlink(missing_ok=True)
        opts.update({k: v for k, v in c.options.items() if k != "qat"})
        return built

    return Candidate("qat fine-tune + onnxruntime", opts, build)
