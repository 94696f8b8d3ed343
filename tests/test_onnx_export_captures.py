"""Keras -> ONNX for a model whose preprocessing is a Normalization layer with constant mean/variance.

tf2onnx left the layer's captured constants as extra graph inputs (found by benchmarks/zoo.py on
EfficientNetB0): the ONNX file had three inputs and convert refused it. They must be initializers.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="needs edgeproof[train]")


def test_normalization_constants_become_initializers_and_outputs_match():
    import keras
    import onnxruntime as ort

    from edgeproof.convert.onnx_export import to_onnx

    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Rescaling(1 / 255.0)(inp)
    x = keras.layers.Normalization(mean=[0.485, 0.456, 0.406], variance=[0.05, 0.05, 0.05])(x)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(x))
    model = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(x))

    proto = to_onnx(model)
    assert [i.name for i in proto.graph.input] == ["image"]
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    images = np.random.default_rng(0).uniform(0, 255, (4, 16, 16, 3)).astype(np.float32)
    np.testing.assert_allclose(sess.run(None, {"image": images})[0], model.predict(images, verbose=0), atol=1e-5)
