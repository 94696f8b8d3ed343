"""The model registry: both models build and run at 16-64 px with edge-friendly layers only."""

from __future__ import annotations

import numpy as np
import pytest

from edgeproof.errors import UsageError

pytest.importorskip("tensorflow", reason="needs edgeproof[train]")

# Layer types that convert cleanly to TFLite int8, ONNX and the Edge TPU.
EDGE_FRIENDLY = {"InputLayer", "Rescaling", "Conv2D", "DepthwiseConv2D", "BatchNormalization", "ReLU",
                 "Add", "MaxPooling2D", "GlobalAveragePooling2D", "Dense"}


@pytest.mark.parametrize("name", ["tiny_cnn", "mobilenet_v2_tiny"])
@pytest.mark.parametrize("size", [16, 32, 64])
def test_models_build_and_run(name, size):
    from edgeproof.train.models import build_model

    model = build_model(name, size, 4, alpha=0.5 if size == 64 else 1.0)
    assert model.inputs[0].name == "image"
    assert tuple(model.input_shape) == (None, size, size, 3)
    kinds = {type(layer).__name__ for layer in model.layers}
    assert kinds <= EDGE_FRIENDLY, kinds - EDGE_FRIENDLY
    assert "Rescaling" in kinds  # preprocessing lives inside the graph
    x = np.random.default_rng(0).uniform(0, 255, (3, size, size, 3)).astype(np.float32)
    y = model(x, training=False).numpy()
    assert y.shape == (3, 4)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)
    relu6 = [layer for layer in model.layers if type(layer).__name__ == "ReLU" and layer.max_value == 6.0]
    assert bool(relu6) == (name == "mobilenet_v2_tiny")


def test_alpha_scales_width():
    from edgeproof.train.models import build_model

    small = build_model("mobilenet_v2_tiny", 32, 3, alpha=0.5).count_params()
    big = build_model("mobilenet_v2_tiny", 32, 3, alpha=1.0).count_params()
    assert small < big / 2


def test_bad_model_arguments():
    from edgeproof.train.models import build_model

    with pytest.raises(UsageError, match="unknown model .resnet.; valid: tiny_cnn, mobilenet_v2_tiny, mobilenet, "):
        build_model("resnet", 32, 3)
    with pytest.raises(UsageError, match="out of range"):
        build_model("tiny_cnn", 8, 3)
    with pytest.raises(UsageError, match="at least 2"):
        build_model("tiny_cnn", 32, 1)


def test_recalibrate_batchnorm_uses_data_statistics():
    import keras

    from edgeproof.train.models import build_model, recalibrate_batchnorm

    keras.utils.set_random_seed(0)
    model = build_model("tiny_cnn", 16, 2)
    bn = model.get_layer("bn1")
    assert np.allclose(bn.moving_mean.numpy(), 0.0)
    images = np.random.default_rng(0).uniform(100, 255, (96, 16, 16, 3)).astype(np.float32)
    used = recalibrate_batchnorm(model, images, batch_size=32)
    assert used == 96 and bn.momentum == 0.9  # momentum restored
    feats = keras.Model(model.inputs[0], model.get_layer("conv1").output)(images).numpy()
    np.testing.assert_allclose(bn.moving_mean.numpy(), feats.mean(axis=(0, 1, 2)), rtol=1e-3, atol=1e-4)
