"""convert's qat rung (convert.qat): a seeded QAT fine-tune that the format's own recipe then converts.

The model: the first convolution of shapes' tiny_cnn (Rescaling 1/255, Conv-BN-ReLU) with one weight per
channel eight times the largest other (an outlier sets the per-channel int8 scale, so the small weights lose
most of their bits), a second Conv-BN-ReLU and a softmax head. The edgetpu recipe keeps every op integer.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow_model_optimization", reason="the qat extra (make install adds it)")


def _images(n: int, seed: int) -> np.ndarray:
    """Smooth stripes with a little noise, 32x32 RGB in 0..255 (model-input space)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:32] / 31.0
    out = []
    for _ in range(n):
        a, b, c = rng.uniform(-1, 1, 3)
        base = 127 + 120 * np.sin(3 * (a * xx + b * yy) + c)
        out.append(np.stack([base * rng.uniform(0.5, 1), base[::-1] * rng.uniform(0.5, 1), 255 - base], -1))
    return np.clip(np.asarray(out, np.float32) + rng.normal(0, 8, (n, 32, 32, 3)), 0, 255).astype(np.float32)


def _model():
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    inp = keras.Input((32, 32, 3))
    x = layers.Rescaling(1 / 255.0, name="rescale")(inp)
    for i in (1, 2):
        x = layers.Conv2D(8, 3, use_bias=False, name=f"conv{i}")(x)
        x = layers.BatchNormalization(name=f"bn{i}")(x)
        x = layers.ReLU(name=f"relu{i}")(x)
    x = layers.GlobalAveragePooling2D()(x)
    m = keras.Model(inp, layers.Dense(3, activation="softmax", name="probs")(x))
    k = m.get_layer("conv1").get_weights()[0]
    k[0, 0, 0, :] = 8 * np.abs(k).max()
    m.get_layer("conv1").set_weights([k])
    bn = m.get_layer("bn1").get_weights()
    bn[1][:] = -0.5  # beta: ReLU cuts half of the first layer's range
    m.get_layer("bn1").set_weights(bn)
    w = m.get_layer("probs").get_weights()
    m.get_layer("probs").set_weights([w[0] * 6, w[1]])  # confident enough that the probabilities carry signal
    return m


def _snr_db(model, calib, held, ref, tmp_path) -> float:
    from edgeproof.convert.tflite import to_tflite
    from edgeproof.runtime import load

    path = tmp_path / f"m{len(list(tmp_path.iterdir()))}.tflite"
    path.write_bytes(to_tflite(model, "edgetpu", calib=calib, io_type="int8"))
    with load(path, backend="litert", verify=False) as m:
        got = m.predict(held)
    return float(10 * np.log10((ref ** 2).sum() / ((got - ref) ** 2).sum()))


@pytest.mark.slow
def test_qat_is_seeded_and_makes_the_edgetpu_file_closer_to_the_float_model_than_post_training(tmp_path):
    from edgeproof.convert import qat

    model = _model()
    train, held = _images(320, 1), _images(96, 2)
    ref = np.asarray(model.predict(held, verbose=0))
    data = qat.QatData(train, np.arange(len(train)) % 3, "test images")
    info: dict = {}
    a = qat.fine_tune(model, data, seed=0, info=info)
    b = qat.fine_tune(model, data, seed=0)
    assert all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights(), strict=True))  # same seed
    assert not np.array_equal(a.get_layer("conv1").get_weights()[0], model.get_layer("conv1").get_weights()[0])
    assert info["epochs"] == qat.QAT_EPOCHS and not info["stopped_by_time_bound"], info
    ptq = _snr_db(model, train[:100], held, ref, tmp_path)
    tuned = _snr_db(a, train[:100], held, ref, tmp_path)
    # the same recipe, calibration and held-out images; QAT must gain more than 3 dB over post-training
    assert tuned > ptq + 3, (ptq, tuned)


def test_the_tf_keras_rebuild_refuses_a_model_it_cannot_copy():
    import keras

    from edgeproof.convert.tf_keras_model import NotRebuildable, to_tf_keras

    a, b = keras.Input((4,)), keras.Input((4,))
    two_inputs = keras.Model([a, b], keras.layers.Add()([a, b]))
    with pytest.raises(NotRebuildable, match="single-input"):
        to_tf_keras(two_inputs, np.zeros((1, 4), np.float32))


def test_the_qat_rival_is_ranked_by_the_searchs_rule_snr_within_one_image():
    from types import SimpleNamespace

    from edgeproof.parity.qat_rung import _ranks_higher

    def row(agree: int, snr: float):
        return SimpleNamespace(comparison=SimpleNamespace(task=SimpleNamespace(top1_agree_count=agree),
                                                          tensor=SimpleNamespace(snr_db=snr)))

    assert not _ranks_higher(row(192, 33.7), row(191, 44.5))  # shapes seed 0, int16x8: one image, 11 dB worse
    assert _ranks_higher(row(192, 37.4), row(191, 27.0))  # seed 4, edgetpu
    assert _ranks_higher(row(191, 38.8), row(191, 37.0))  # seed 2, edgetpu
    assert not _ranks_higher(row(191, 37.0), row(191, 37.0))  # a tie keeps the post-training file
    assert _ranks_higher(row(192, 30.0), row(189, 45.0))  # more than one image better: agreement decides
    assert not _ranks_higher(SimpleNamespace(comparison=None), row(150, 10.0))  # an error row never wins


def _zoo_blocks_model():
    """The keras.applications blocks the zoo's nets are made of and the first rebuild could not take: a
    DepthwiseConv2D (Keras 3 names its weight `kernel`, tf_keras `depthwise_kernel`), MobileNetV3's hard_silu
    Activation and its hard sigmoid written as Keras 3 ops on a constant (x + 3, x * 1/6), a squeeze-excite
    Multiply, and ResNet50V2's pre-activation BatchNormalization after an Add (tfmot refuses a bare BN)."""
    import keras
    from keras import layers, ops

    keras.utils.set_random_seed(0)
    inp = keras.Input((32, 32, 3))
    x = layers.Rescaling(1 / 127.5, offset=-1, name="rescale")(inp)
    x = layers.Conv2D(8, 3, strides=2, use_bias=False, name="stem")(x)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.Activation("hard_silu", name="stem_hs")(x)
    y = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    y = layers.BatchNormalization(name="dw_bn")(y)
    y = layers.ReLU(name="dw_relu")(y)
    s = layers.GlobalAveragePooling2D(keepdims=True, name="se_pool")(y)
    s = layers.Conv2D(8, 1, name="se_conv")(s)
    s = ops.multiply(layers.ReLU(6.0, name="se_relu6")(ops.add(s, 3.0)), 1.0 / 6.0)
    y = layers.Multiply(name="se_mul")([y, s])
    x = layers.Add(name="residual")([x, y])
    x = layers.BatchNormalization(name="preact_bn")(x)
    x = layers.ReLU(name="preact_relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, layers.Dense(3, activation="softmax", name="probs")(x))


@pytest.mark.slow
def test_qat_runs_on_the_zoo_blocks_and_brings_the_trained_weights_back():
    import keras

    from edgeproof.convert import qat
    from edgeproof.convert.tf_keras_model import to_tf_keras

    model = _zoo_blocks_model()
    train = _images(96, 1)
    twin = to_tf_keras(model, train[:8])  # raised NotRebuildable on hard_silu and on the ops.add layer
    assert np.max(np.abs(np.asarray(twin(train[:16])) - np.asarray(model(train[:16])))) < 1e-4
    tuned = qat.fine_tune(model, qat.QatData(train, np.arange(96) % 3, "test images"), epochs=1)
    # every weighted layer got its own fine-tuned weights back (the depthwise kernel raised KeyError before)
    for name in ("stem", "dw", "se_conv", "probs"):
        before, after = model.get_layer(name).get_weights()[0], tuned.get_layer(name).get_weights()[0]
        assert before.shape == after.shape and not np.array_equal(before, after), name
    # BatchNorm was frozen: its statistics are the float model's
    for name in ("stem_bn", "dw_bn", "preact_bn"):
        assert all(np.array_equal(a, b) for a, b in zip(model.get_layer(name).get_weights(),
                                                        tuned.get_layer(name).get_weights(), strict=True))
    assert isinstance(tuned, keras.Model) and tuned.predict(train[:4], verbose=0).shape == (4, 3)
