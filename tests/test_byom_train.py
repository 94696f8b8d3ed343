"""`edgeproof train --model NAME` on keras.applications backbones: the table, --weights, transfer learning."""

from __future__ import annotations

import json
import socket
import time

import numpy as np
import pytest

from edgeproof.cli.main import run_cli
from edgeproof.errors import UsageError

pytest.importorskip("tensorflow", reason="needs edgeproof[train]")

REQUIRED = ("mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0", "efficientnetv2_b0",
            "resnet50")


def test_backbone_table_has_the_required_architectures():
    from edgeproof.train.models import BACKBONES, MODELS

    assert set(REQUIRED) <= set(BACKBONES)
    assert {"tiny_cnn", "mobilenet_v2_tiny"} <= set(MODELS) and set(BACKBONES) <= set(MODELS)
    import keras

    for bb in BACKBONES.values():
        assert callable(getattr(keras.applications, bb.app)), bb.app


@pytest.mark.slow
@pytest.mark.parametrize("name", REQUIRED)
def test_backbones_build_with_preprocessing_inside(name):
    """Each takes raw 0..255 RGB: the same image as uint8-range floats gives a valid softmax, and the model's
    own preprocess_input is inside (checked against keras.applications' preprocess_input on the backbone)."""
    from edgeproof.train.models import build_model

    model = build_model(name, 32, 3, alpha=0.35 if name == "mobilenet_v2" else 1.0)
    assert model.inputs[0].name == "image" and tuple(model.input_shape) == (None, 32, 32, 3)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    y = np.asarray(model(x, training=False))
    assert y.shape == (2, 3)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)
    assert model.layers[-1].name == "probs" and any(layer.name.startswith("conv") or "conv" in layer.name.lower()
                                                    for layer in model.layers)


def test_caffe_preprocessing_equals_keras_preprocess_input():
    """resnet50's fixed 1x1 conv is exactly keras.applications.resnet50.preprocess_input (RGB->BGR, mean)."""
    import keras

    from edgeproof.train.models import _preprocess_layers

    inp = keras.Input((8, 8, 3))
    pre = keras.Model(inp, _preprocess_layers(inp, "caffe"))
    x = np.random.default_rng(1).uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
    want = keras.applications.resnet50.preprocess_input(x.copy())
    np.testing.assert_allclose(np.asarray(pre(x)), want, atol=1e-4)
    tf_pre = keras.Model(inp, _preprocess_layers(inp, "tf"))
    np.testing.assert_allclose(np.asarray(tf_pre(x)), keras.applications.mobilenet_v2.preprocess_input(x.copy()),
                               atol=1e-5)
    torch_pre = keras.Model(inp, _preprocess_layers(inp, "torch"))
    np.testing.assert_allclose(np.asarray(torch_pre(x)), keras.applications.densenet.preprocess_input(x.copy()),
                               atol=1e-4)


def test_transfer_plan_freezes_then_fine_tunes_top_layers():
    from edgeproof.train.loop import phase_of
    from edgeproof.train.models import build_model, transfer_plan

    assert [(p.epochs, p.label) for p in transfer_plan("mobilenet_v3_small", "none", 4, 1e-3)] == [(4, "all")]
    assert [p.label for p in transfer_plan("tiny_cnn", "none", 4, 1e-3)] == ["all"]
    plan = transfer_plan("mobilenet_v3_small", "imagenet", 4, 1e-3)
    assert [(p.epochs, p.label) for p in plan] == [(2, "head"), (2, "top")]
    assert plan[1].lr == pytest.approx(1e-4)
    assert phase_of(plan, 1) == 0 and phase_of(plan, 3) == 1
    assert len(transfer_plan("resnet50", "w.h5", 1, 1e-3)) == 1  # one epoch: the head only

    import keras

    model = build_model("mobilenet_v3_small", 32, 3, alpha=0.75)
    n_head = plan[0].select(model)
    trainable = [layer.name for layer in model.layers if layer.trainable and layer.weights]
    assert n_head == 1 and trainable == ["probs"]  # only the new head (dropout and GAP have no weights)
    n_top = plan[1].select(model)
    layers = [layer for layer in model.layers if layer.weights]
    assert 1 < n_top < len(layers)
    assert not any(layer.trainable for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization))
    first_trainable = next(i for i, layer in enumerate(layers) if layer.trainable)
    assert all(layer.trainable or isinstance(layer, keras.layers.BatchNormalization)
               for layer in layers[first_trainable:])  # the top of the backbone, not scattered layers


@pytest.mark.slow
def test_train_backbone_from_a_weights_file_then_convert(shapes_dir, tmp_path, capsys):
    """--weights FILE (saved here by the test): frozen phase, fine-tune phase, a complete run that converts."""
    import keras

    backbone = keras.applications.MobileNetV3Small(input_shape=(32, 32, 3), alpha=0.75, include_top=False,
                                                   weights=None, include_preprocessing=True)
    wfile = tmp_path / "mnv3.weights.h5"
    backbone.save_weights(wfile)
    out = tmp_path / "run"
    rc = run_cli(["train", "--data", str(shapes_dir), "--model", "mobilenet_v3_small", "--alpha", "0.75",
                  "--weights", str(wfile), "--img-size", "32", "--epochs", "2", "--no-progress", "-o", str(out),
                  "--json"])
    assert rc == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    assert summary["model"] == "mobilenet_v3_small" and summary["epochs_run"] == 2
    pp = json.loads((out / "preprocess.json").read_text())
    assert pp["in_graph"]["backbone"]["application"] == "MobileNetV3Small" and pp["scale"] == 1.0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["weights"] == str(wfile)
    model = keras.saving.load_model(out / "model.keras", compile=False)
    # the fine-tuning phase left BatchNorm frozen and the lower backbone untouched: its weights are the file's
    first_conv = next(layer for layer in model.layers if layer.name == "conv")
    np.testing.assert_array_equal(first_conv.get_weights()[0], backbone.get_layer("conv").get_weights()[0])
    assert run_cli(["convert", str(out), "--to", "tflite-fp32,onnx-fp32", "-o", str(tmp_path / "a"),
                    "--no-progress"]) == 0


def test_weights_errors_are_one_line(shapes_dir, tmp_path, capsys):
    cases = [
        (["--model", "tiny_cnn", "--weights", "imagenet"], "--weights applies to the keras.applications"),
        (["--model", "resnet50", "--weights", str(tmp_path / "missing.h5")], "no such file"),
        (["--model", "resnet50", "--alpha", "0.5"], "resnet50 has no width multiplier"),
    ]
    for args, text in cases:
        t = time.monotonic()
        rc = run_cli(["train", "--data", str(shapes_dir), *args, "--img-size", "32", "--epochs", "1",
                      "--no-progress", "-o", str(tmp_path / "r")])
        err = capsys.readouterr().err
        assert rc == 2 and text in err and "Traceback" not in err, err
        assert time.monotonic() - t < 60
    assert not (tmp_path / "r").exists()


def test_offline_imagenet_fails_fast_with_the_alternatives(tmp_path, monkeypatch):
    """No network: Keras cannot fetch the weights; one line suggesting --weights FILE or none, no hang."""
    import keras

    from edgeproof.train.models import build_model

    def offline(*a, **k):
        raise socket.gaierror(-3, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", offline)
    monkeypatch.setattr(socket, "create_connection", offline)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))  # no cached weights
    monkeypatch.setattr(keras.src.utils.file_utils.config, "keras_home", lambda: str(tmp_path / "keras_home"),
                        raising=False)
    t = time.monotonic()
    with pytest.raises(UsageError) as err:
        build_model("mobilenet_v3_small", 32, 3, alpha=0.75, weights="imagenet")
    msg = str(err.value)
    assert "--weights imagenet" in msg and "--weights FILE" in msg and "--weights none" in msg and "\n" not in msg
    assert time.monotonic() - t < 30
    assert socket.getdefaulttimeout() is None  # the download timeout is not left behind
