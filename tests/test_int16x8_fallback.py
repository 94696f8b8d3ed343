"""tflite-int16x8 on a model with an op that has no 16x8 kernel (HARD_SWISH, as in MobileNetV3).

The strict conversion is refused by TensorFlow; the recipe's float fallback keeps that op alone in float,
and convert says so in its notes and in the artifact's metadata instead of failing the format.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from _convert_helpers import write_images

from edgeproof.cli.main import run_cli

pytest.importorskip("tensorflow", reason="needs edgeproof[train]")

SIZE = 16
CLASSES = ["a", "b", "c"]


def _model(activation: str = "hard_swish"):
    """Rescaling, one Conv2D with `activation`, global pool, softmax."""
    import keras

    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((SIZE, SIZE, 3)), keras.layers.Rescaling(1 / 255.0),
        keras.layers.Conv2D(8, 3, padding="same"), keras.layers.Activation(activation),
        keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(len(CLASSES), activation="softmax"),
    ])


def _calib(n: int = 16) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (n, SIZE, SIZE, 3)).astype(np.float32)


def test_strict_16x8_refuses_hard_swish_and_the_fallback_keeps_only_it_in_float():
    import tensorflow as tf

    from edgeproof.convert.tflite import UNSUPPORTED_OP, float_ops, to_tflite

    model = _model()
    x = _calib()
    conv = tf.lite.TFLiteConverter.from_keras_model(model)  # what the recipe asks for, without the fallback
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([x[i : i + 1]] for i in range(len(x)))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    with pytest.raises(Exception, match=UNSUPPORTED_OP):
        conv.convert()

    data = to_tflite(model, "tflite-int16x8", calib=x, io_type="float32")
    assert float_ops(data) == {"HARD_SWISH": 1}
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=data)
    it.allocate_tensors()
    conv_out = [t for t in it.get_tensor_details() if t["dtype"] == np.int16]
    assert conv_out, "the rest of the graph is int16"
    out = []
    for img in x[:4]:
        it.set_tensor(it.get_input_details()[0]["index"], img[None])
        it.invoke()
        out.append(it.get_tensor(it.get_output_details()[0]["index"])[0])
    np.testing.assert_allclose(np.stack(out), model.predict(x[:4], verbose=0), atol=2e-3)
    plain = to_tflite(_model("relu"), "tflite-int16x8", calib=x, io_type="float32")
    assert float_ops(plain) == {}  # no fallback where every op has its kernel


def test_convert_names_the_float_ops_in_notes_and_metadata(tmp_path, capsys):
    from edgeproof.runtime.metadata import read_metadata

    model_path = tmp_path / "hs.keras"
    _model().save(model_path)
    write_images(tmp_path / "calib", 6, CLASSES, SIZE)
    out = tmp_path / "art"
    rc = run_cli(["convert", str(model_path), "--to", "tflite-int16x8", "--labels", ",".join(CLASSES),
                  "--calib-data", str(tmp_path / "calib"), "-o", str(out), "--no-progress", "--json"])
    assert rc == 0, capsys.readouterr().err
    entry = json.loads((out / "manifest.json").read_text())["artifacts"]["tflite-int16x8"]
    assert entry["status"] == "ok"
    assert any("HARD_SWISH x1" in n and "compute in float" in n for n in entry["notes"]), entry["notes"]
    meta = read_metadata(out / entry["path"])
    assert meta.extra["float_ops"] == {"HARD_SWISH": 1}
    assert "float_fallback" in meta.extra["options"]
