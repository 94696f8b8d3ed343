"""ONNX export of ConvNeXt's blocks: a grouped Conv2D (Keras 3 runs it in a nested XLA function, tf2onnx saw a
StatefulPartitionedCall) and the exact GELU (TensorFlow writes it with Erfc, which tf2onnx lacks). The zoo's
ConvNeXtTiny failed onnx-fp32 and onnx-int8 with both; the exported file must compute what Keras computes."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.mark.slow
def test_a_grouped_conv_and_exact_gelu_export_and_match_keras_in_onnxruntime():
    import keras
    import onnxruntime as ort
    from keras import layers

    from edgeproof.convert.onnx_export import to_onnx

    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 3))
    x = layers.Conv2D(8, 2, strides=2, name="stem")(inp)
    x = layers.Conv2D(8, 7, padding="same", groups=8, name="dw")(x)  # ConvNeXt's depthwise convolution
    x = layers.LayerNormalization(epsilon=1e-6)(x)
    x = layers.Dense(16)(x)
    x = layers.Activation("gelu", name="gelu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, layers.Dense(3, activation="softmax")(x))
    x = np.random.default_rng(0).uniform(0, 1, (8, 16, 16, 3)).astype(np.float32)
    proto = to_onnx(model)
    ops = {n.op_type for n in proto.graph.node}
    assert "Erf" in ops and not any("Call" in op for op in ops), ops
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    assert np.max(np.abs(got - np.asarray(model(x)))) < 1e-5
