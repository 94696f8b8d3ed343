"""Keras -> ONNX with tf2onnx, through a tf.function with an explicit input signature.

`tf2onnx.convert.from_keras` raises KeyError: 'keras_tensor_N' on Keras 3 models; tracing
`model(x, training=False)` with a named TensorSpec avoids it and gives a dynamic batch axis.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from edgeproof.errors import CheckFailed, UsageError

INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
DEFAULT_OPSET = 17
MIN_OPSET = 13  # per-channel QDQ quantization needs >= 13


def max_opset() -> int:
    from tf2onnx import constants

    return max(constants.OPSET_TO_IR_VERSION)


def check_opset(opset: int) -> int:
    """Validate the opset against what the installed tf2onnx supports."""
    top = max_opset()
    if not isinstance(opset, int) or not MIN_OPSET <= opset <= top:
        raise UsageError(f"ONNX opset {opset!r} is not valid; valid: {MIN_OPSET}..{top} (default {DEFAULT_OPSET})")
    return opset


def to_onnx(model: Any, opset: int = DEFAULT_OPSET):
    """Return an onnx.ModelProto: input 'image' (N, H, W, C) float32 with dynamic N, output 'probabilities'."""
    import tensorflow as tf
    import tf2onnx

    from edgeproof.convert.onnx_ready import onnx_ready

    check_opset(opset)
    model, rewritten = onnx_ready(model)  # grouped convolutions and the exact GELU: ops tf2onnx lacks
    if rewritten:
        logging.getLogger(__name__).info("ONNX export: %s", "; ".join(rewritten))
    shape = tuple(model.inputs[0].shape)
    spec = tf.TensorSpec((None, *shape[1:]), tf.float32, name=INPUT_NAME)

    @tf.function(input_signature=[spec])
    def serve(image):
        return {OUTPUT_NAME: model(image, training=False)}

    errors = _ErrorLog()
    log = logging.getLogger("tf2onnx")
    log.addHandler(errors)
    try:
        proto, _ = tf2onnx.convert.from_function(serve, input_signature=[spec], opset=opset)
    finally:
        log.removeHandler(errors)
    unsupported = [m for m in errors.messages if "is not supported" in m or "Unsupported ops" in m]
    if unsupported:  # tf2onnx only logs these and returns a model no runtime can load
        raise CheckFailed(_unsupported_reason(unsupported, opset))
    _inline_captured_constants(proto, serve.get_concrete_function())
    return proto


def _inline_captured_constants(proto: Any, concrete: Any) -> None:
    """Turn graph inputs that are tensors the tf.function captured into initializers.

    tf2onnx freezes captured variables but leaves captured constant tensors as graph inputs: a
    `Normalization(mean=..., variance=...)` layer (EfficientNet's own preprocessing, DenseNet's torch
    preprocessing) gave an ONNX model with three inputs that no runtime can feed.
    """
    from onnx import numpy_helper

    values = {inner.name: outer for outer, inner in concrete.graph.captures
              if outer.dtype.name != "resource" and hasattr(outer, "numpy")}
    extra = [i for i in proto.graph.input if i.name in values]
    for inp in extra:
        proto.graph.initializer.append(numpy_helper.from_array(values[inp.name].numpy(), inp.name))
        proto.graph.input.remove(inp)
    if extra:
        logging.getLogger(__name__).info("inlined %d captured constant(s) as initializers: %s", len(extra),
                                         ", ".join(i.name for i in extra))


class _ErrorLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _unsupported_reason(messages: list[str], opset: int) -> str:
    """'tf2onnx cannot convert layer 'x' (TF op Igamma) at opset 17: Unsupported ops: Counter(...)'."""
    from edgeproof.convert.reasons import layer_from_location

    where = []
    for m in messages:
        hit = re.search(r"Tensorflow op \[([^:\]]+): ([^\]]+)\] is not supported", m)
        if hit:
            where.append(f"layer '{layer_from_location(hit.group(1))}' (TF op {hit.group(2)})")
    summary = next((m for m in messages if "Unsupported ops" in m), messages[-1])
    return f"tf2onnx cannot convert {', '.join(where) or 'the model'} at opset {opset}: {summary}"
