"""Model.predict_pixels: uint8 pixels into a quantized model by an integer op, checked against a hand-written
interpreter loop that quantizes the float way (round(x / scale + zero point)), and the table that finds the op."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edgeproof.contract import Preprocess
from edgeproof.errors import UsageError
from edgeproof.runtime.pixels import dequantize_table, pixel_mask
from edgeproof.runtime.preprocess import pixels, prepare


def _quantizer(scale: float, zp: int, dtype):
    info = np.iinfo(dtype)
    return lambda x: np.clip(np.rint(x / np.float32(scale) + zp), info.min, info.max).astype(dtype)


@pytest.mark.parametrize("pp,scale,zp,dtype,want", [
    (Preprocess(8, 8), 1.0, -128, np.int8, 0x80),                      # 0..255 pixels, int8: v - 128 = v ^ 0x80
    (Preprocess(8, 8, scale=1 / 255), 1 / 255, -128, np.int8, 0x80),   # pixels scaled to [0, 1], same bytes
    (Preprocess(8, 8), 0.9999868, -128, np.int8, 0x80),                # a calibrated scale a hair under 1
    (Preprocess(8, 8), 1.0, 0, np.uint8, 0),                           # uint8 model: the pixels themselves
    (Preprocess(8, 8), 2.0, -128, np.int8, None),                      # halves the pixels: no integer path
    (Preprocess(8, 8, mean=(127.5,), std=(127.5,)), 1 / 127.5, 0, np.int8, None),  # v - 127.5 rounds to even
    (Preprocess(8, 8, channels=1), 1.0, -128, np.int8, 0x80),
])
def test_pixel_mask_is_found_only_where_it_equals_the_float_path(pp, scale, zp, dtype, want):
    mask = pixel_mask(pp, np.dtype(dtype), _quantizer(scale, zp, dtype))
    assert (None if mask is None else int(mask)) == want


def test_dequantize_table_matches_the_float64_product_for_every_value():
    for dtype, zp, scale in ((np.int8, -128, 0.00390625), (np.int8, 3, 0.0173), (np.uint8, 7, 0.11)):
        table = dequantize_table(np.dtype(dtype), np.float32(scale), np.float32(zp))
        q = np.arange(256, dtype=np.uint8).view(dtype).reshape(2, 128)
        want = ((q.astype(np.float64) - zp) * np.float64(np.float32(scale))).astype(np.float32)
        assert np.array_equal(table.take(q), want)
    assert dequantize_table(np.dtype(np.int16), np.float32(1), np.float32(0)) is None


def test_pixels_is_prepare_before_its_normalization():
    bgr = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    pp = Preprocess(8, 12, scale=1 / 255, mean=(0.5,), std=(0.25,))
    px = pixels(bgr, pp)
    assert px.dtype == np.uint8 and px.shape == (8, 12, 3)
    rgb = cv2.cvtColor(cv2.resize(bgr, (12, 8), interpolation=cv2.INTER_LINEAR), cv2.COLOR_BGR2RGB)
    assert np.array_equal(px, rgb)
    np.testing.assert_allclose(prepare(bgr, pp), (rgb / 255 - 0.5) / 0.25, rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def full_range(tmp_path_factory):
    """A small seeded CNN converted to int8 and uint8 I/O, calibrated on pixels that span 0..255 (as photos do):
    its input quantization is scale 1, zero point -128 (int8) or 0 (uint8)."""
    pytest.importorskip("tensorflow", reason="converts its models with edgeproof[train]")
    pytest.importorskip("ai_edge_litert")
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 3))
    h = keras.layers.Conv2D(4, 3, activation="relu")(keras.layers.Rescaling(1 / 255)(inp))
    model = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(h)))
    calib = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3)).astype(np.float32)
    calib[0, 0, 0], calib[0, 0, 1] = 0, 255
    out = {}
    for name, io in (("int8", tf.int8), ("uint8", tf.uint8)):
        conv = tf.lite.TFLiteConverter.from_keras_model(model)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([calib[i:i + 1]] for i in range(len(calib)))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = conv.inference_output_type = io
        out[name] = tmp_path_factory.mktemp("pixels") / f"model.{name}.tflite"
        out[name].write_bytes(conv.convert())
    return out


def _bare_scores(path, px: np.ndarray) -> np.ndarray:
    """A hand-written loop: float pixels quantized by the tensor's own parameters, invoke, dequantize."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    it.resize_tensor_input(inp["index"], list(px.shape))
    it.allocate_tensors()
    s, z = inp["quantization"]
    it.set_tensor(inp["index"], _quantizer(s, z, inp["dtype"])(px.astype(np.float32)))
    it.invoke()
    so, zo = out["quantization"]
    return ((it.get_tensor(out["index"]).astype(np.float64) - zo) * so).astype(np.float32)


@pytest.mark.slow
@pytest.mark.parametrize("key", ["int8", "uint8"])
def test_predict_pixels_takes_the_integer_path_and_scores_like_a_bare_loop(full_range, key):
    from edgeproof.runtime import load

    rng = np.random.default_rng(3)
    with load(full_range[key]) as m:
        assert m._pixel_mask is not None, "a model calibrated on 0..255 pixels takes them by an integer op"
        # one image, a batch (the interpreter resizes: its buffers move), then one image again
        for n in (1, 1, 3, 1, 2):
            px = rng.integers(0, 256, (n, *m._hwc), dtype=np.uint8)
            got = m.predict_pixels(px)
            np.testing.assert_allclose(got, _bare_scores(full_range[key], px), rtol=0, atol=1e-6)
            assert np.array_equal(got, m.predict(px.astype(np.float32)))
        first = m.predict_pixels(px[:1])
        m.predict_pixels(rng.integers(0, 256, (1, *m._hwc), dtype=np.uint8))
        assert np.array_equal(first, m.predict(px[:1].astype(np.float32))), "a result is not the runtime's buffer"


@pytest.mark.slow
def test_a_model_calibrated_on_part_of_the_range_takes_the_float_path(full_range, tmp_path):
    """tests/_runtime_models' int8 model saw pixels up to 254 (scale 254/255): no integer op equals its map."""
    pytest.importorskip("tensorflow", reason="builds its tiny models with edgeproof[train]")
    from _runtime_models import tiny_models

    from edgeproof.runtime import load

    path = tiny_models().files["tflite-int8"]
    px = np.random.default_rng(5).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    with load(path) as m:
        assert m._pixel_mask is None
        np.testing.assert_allclose(m.predict_pixels(px), _bare_scores(path, px), rtol=0, atol=1e-6)


def test_predict_pixels_on_a_float_model_scores_the_float_pixels(tmp_path):
    pytest.importorskip("onnxruntime")
    from _tiny_onnx import build_linear_onnx

    from edgeproof.runtime import load

    path, reference = build_linear_onnx(tmp_path / "linear.onnx")
    px = np.random.default_rng(4).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    with load(path) as m:
        np.testing.assert_allclose(m.predict_pixels(px), reference(px.astype(np.float32)), rtol=0, atol=1e-5)
        with pytest.raises(UsageError, match="takes uint8 pixels"):
            m.predict_pixels(px.astype(np.float32))


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 2])
def test_run_session_on_a_pixel_model_scores_like_predict_on_prepared_images(full_range, tmp_path, batch):
    from edgeproof.runtime import LoadSpec, RunOptions, load, run_session
    from edgeproof.runtime.preprocess import load_image

    rng = np.random.default_rng(6)
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"img{i}.png"), rng.integers(0, 256, (20 + i, 24, 3), dtype=np.uint8))
    got: dict[str, np.ndarray] = {}
    summary = run_session(LoadSpec(full_range["int8"]), str(tmp_path), sinks=[lambda r: got.update({r.name: r.scores})],
                          options=RunOptions(batch=batch))
    assert summary.count == 3
    with load(full_range["int8"]) as m:
        assert m.takes_pixels
        for name, scores in got.items():
            assert np.array_equal(scores, m.predict(load_image(name, m.preprocess)[None])[0])
