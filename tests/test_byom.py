"""Bring your own model: convert / parity / run / inspect a Keras model edgeproof did not train.

Fixtures build the models a new user arrives with: the classic Keras tutorial binary-sigmoid model
saved as legacy .h5, a softmax .keras with a Rescaling layer, a logits SavedModel, and a
keras.applications MobileNetV3Small (weights=None, its own preprocessing) at 64 px.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _convert_helpers import write_images

from edgeproof.cli.main import run_cli

pytest.importorskip("tensorflow", reason="needs edgeproof[train]")

SIZE = 24
CLASSES = ["cat", "dog"]


def _tutorial_binary(size: int):
    """Conv/MaxPool blocks, Flatten, Dense, Dense(1, sigmoid): trained on x/255 outside the graph."""
    import keras

    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((size, size, 3)),
        keras.layers.Conv2D(8, 3, activation="relu"), keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(8, 3, activation="relu"), keras.layers.MaxPooling2D(),
        keras.layers.Flatten(), keras.layers.Dense(16, activation="relu"),
        keras.layers.Dense(1, activation="sigmoid", name="p_dog"),
    ])


def _fit(model, data: Path, scale: float, epochs: int = 3):
    """A few epochs so that the outputs mean something (labels: subfolder order)."""
    from edgeproof.contract import Preprocess
    from edgeproof.runtime.preprocess import load_image

    size = model.inputs[0].shape[1]
    pp = Preprocess(size, size, scale=scale)
    paths = sorted(data.glob("*/*.png"))
    x = np.stack([load_image(p, pp) for p in paths])
    y = np.asarray([CLASSES.index(p.parent.name) for p in paths], np.float32)
    binary = model.outputs[0].shape[-1] == 1
    loss = "binary_crossentropy" if binary else "sparse_categorical_crossentropy"
    if model.layers[-1].get_config().get("activation") == "linear":
        import keras

        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile("adam", loss)
    model.fit(x, y, epochs=epochs, batch_size=8, verbose=0)
    return model


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("byom_data")
    write_images(root, 10, CLASSES, SIZE)
    return root


@pytest.fixture(scope="module")
def tutorial_h5(images, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("h5") / "image_classification_model.h5"
    _fit(_tutorial_binary(SIZE), images, 1 / 255, epochs=40).save(path)  # confident outputs: 3 epochs left p≈0.43–0.57
    return path


@pytest.fixture(scope="module")
def softmax_keras(images, tmp_path_factory) -> Path:
    import keras

    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.Rescaling(1 / 127.5, offset=-1),
                              keras.layers.Conv2D(8, 3, activation="relu"), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(2, activation="softmax")])
    path = tmp_path_factory.mktemp("keras") / "mine.keras"
    _fit(model, images, 1.0).save(path)
    return path


@pytest.fixture(scope="module")
def logits_saved_model(images, tmp_path_factory) -> Path:
    import keras

    keras.utils.set_random_seed(2)
    model = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.Conv2D(8, 3, activation="relu"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])
    path = tmp_path_factory.mktemp("sm") / "exported"
    _fit(model, images, 1 / 255).export(str(path), verbose=False)
    return path


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())["artifacts"]


@pytest.mark.slow
def test_tutorial_h5_binary_sigmoid_end_to_end(tutorial_h5, images, tmp_path, capsys):
    """The issue's tutorial model: convert every format, parity passes, runtime scores = Keras' sigmoid."""
    import keras

    from edgeproof.formats import FORMATS
    from edgeproof.runtime import load
    from edgeproof.runtime.preprocess import load_image

    out = tmp_path / "art"
    rc = run_cli(["convert", str(tutorial_h5), "--to", "all", "--labels", "cat,dog", "--scale", "0.00392157",
                  "--calib-data", str(images), "-o", str(out), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    assert set(_manifest(out)) == set(FORMATS)
    rc = run_cli(["parity", str(tutorial_h5), "--artifacts", str(out), "--data", str(images), "-o",
                  str(tmp_path / "par"), "--no-progress", "--no-triage"])
    assert rc == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "par" / "parity.json").read_text())
    assert report["images"]["labelled"] and report["reference"]["accuracy"] is not None

    ref = keras.saving.load_model(tutorial_h5, compile=False)
    paths = sorted(images.glob("*/*.png"))[::4]
    with load(out / "model.tflite-fp32.tflite") as m:
        assert m.labels == CLASSES and m.meta.output_kind == "sigmoid"
        x = np.stack([load_image(p, m.preprocess) for p in paths])
        scores = m.predict(x)
        p = np.asarray(ref(x, training=False))[:, 0]
        assert scores.shape == (len(paths), 2)
        np.testing.assert_allclose(scores[:, 1], p, atol=1e-6)
        np.testing.assert_allclose(scores[:, 0], 1 - p, atol=1e-6)
        top = m.topk(scores[:1], k=5)[0]  # both classes, best first
        assert {name for name, _ in top} == set(CLASSES) and top[0][1] >= top[1][1]
    capsys.readouterr()
    assert run_cli(["run", str(out / "model.onnx-fp32.onnx"), str(paths[0]), "--json"]) == 0
    row = json.loads(capsys.readouterr().out.splitlines()[0])
    assert {d["label"] for d in row["top_k"]} == set(CLASSES)
    assert abs(sum(d["score"] for d in row["top_k"]) - 1) < 1e-5
    assert run_cli(["inspect", str(out / "model.tflite-int8.tflite")]) == 0
    assert "class 1 = p" in capsys.readouterr().out


@pytest.mark.slow
def test_softmax_keras_contract_from_its_rescaling_layer_and_default_labels(softmax_keras, images, tmp_path, capsys):
    out = tmp_path / "art"
    rc = run_cli(["convert", str(softmax_keras), "--to", "tflite-fp32,onnx-fp32", "-o", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert err.count("warning:") == 1 and "class_0..class_1" in err  # labels: the one warning
    assert "rescaling" in err  # says where the contract came from
    from edgeproof.runtime.metadata import read_metadata

    meta = read_metadata(out / "model.onnx-fp32.onnx")
    assert meta.labels == ["class_0", "class_1"] and meta.output_kind == "probabilities"
    pp = meta.preprocess
    assert (pp.scale, pp.mean, pp.std, pp.color) == (1.0, (0.0,) * 3, (1.0,) * 3, "RGB")
    assert pp.in_graph["rescaling"]["offset"] == -1.0
    # an unlabelled folder: agreement and tensor metrics only, and the report says so
    flat = tmp_path / "flat"
    flat.mkdir()
    for p in sorted(images.glob("*/*.png"))[:8]:
        (flat / f"{p.parent.name}_{p.name}").write_bytes(p.read_bytes())
    rc = run_cli(["parity", str(softmax_keras), "--artifacts", str(out), "--data", str(flat), "-o",
                  str(tmp_path / "par"), "--no-progress", "--json"])
    assert rc == 0, capsys.readouterr().err
    rep = json.loads(capsys.readouterr().out)
    assert rep["images"]["labelled"] is False and "accuracy not computed" in rep["images"]["source"]
    assert rep["reference"]["accuracy"] is None
    assert all(r["status"] == "pass" for r in rep["results"])
    assert "unlabelled" in (tmp_path / "par" / "parity.md").read_text()


@pytest.mark.slow
def test_logits_saved_model_with_declared_contract(logits_saved_model, images, tmp_path, capsys):
    out = tmp_path / "art"
    rc = run_cli(["convert", str(logits_saved_model), "--to", "tflite-fp32,onnx-fp32,tflite-int8",
                  "--labels", "cat,dog", "--scale", "0.00392157", "--calib-data", str(images),
                  "--calib-count", "16", "-o", str(out), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    from edgeproof.runtime.metadata import read_metadata

    capsys.readouterr()
    meta = read_metadata(out / "model.tflite-fp32.tflite")
    assert meta.output_kind == "logits" and abs(meta.preprocess.scale - 0.00392157) < 1e-9
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["calibration"]["used"] == 16 and manifest["calibration"]["folder"] == str(images.resolve())
    rc = run_cli(["parity", str(logits_saved_model), "--artifacts", str(out), "--data", str(images), "-o",
                  str(tmp_path / "par"), "--no-progress", "--json"])
    assert rc == 0, capsys.readouterr().err
    rep = json.loads(capsys.readouterr().out)
    fp32 = next(r for r in rep["results"] if r["format"] == "tflite-fp32")
    assert fp32["metrics"]["max_abs"] < 1e-5  # softmax of the logits on both sides
    assert abs(rep["end_to_end"]["preprocessing"]["pixels_max_abs"]) < 0.02  # declared scale on both sides


@pytest.mark.slow
def test_keras_applications_mobilenet_v3_small_convert_and_parity(images, tmp_path, capsys):
    """A real architecture with its own preprocessing (include_preprocessing): contract raw 0-255."""
    import keras

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV3Small(input_shape=(64, 64, 3), alpha=0.75, minimalistic=True,
                                                weights=None, classes=2, include_preprocessing=True)
    path = tmp_path / "mnv3.keras"
    model.save(path)
    data = tmp_path / "d64"
    write_images(data, 8, CLASSES, 64)
    out = tmp_path / "art"
    rc = run_cli(["convert", str(path), "--to", "tflite-fp32,tflite-int8,onnx-fp32", "--labels", "cat,dog",
                  "--calib-data", str(data), "-o", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "warning" not in err  # contract found in the model, labels given
    m = _manifest(out)
    assert m["tflite-int8"]["bytes"] < 0.35 * m["tflite-fp32"]["bytes"]  # measured 0.31 (per-channel params)
    rc = run_cli(["parity", str(path), "--artifacts", str(out), "--data", str(data), "-o", str(tmp_path / "p"),
                  "--no-progress", "--no-triage", "--backends", "litert,onnxruntime", "--json"])
    rep = json.loads(capsys.readouterr().out)
    by = {r["format"]: r for r in rep["results"]}
    assert by["tflite-fp32"]["status"] == by["onnx-fp32"]["status"] == "pass", rep["failures"]
    assert rc in (0, 1)  # int8 of an untrained net is judged honestly; the float formats must pass


def _two_input(tmp_path: Path) -> Path:
    import keras

    a, b = keras.Input((SIZE, SIZE, 3), name="left"), keras.Input((SIZE, SIZE, 3), name="right")
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Add()([a, b]))
    path = tmp_path / "two.keras"
    keras.Model([a, b], keras.layers.Dense(2, activation="softmax")(x)).save(path)
    return path


def _multi_label(tmp_path: Path) -> Path:
    import keras

    model = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(4, activation="sigmoid", name="tags")])
    path = tmp_path / "tags.keras"
    model.save(path)
    return path


def _vector_input(tmp_path: Path) -> Path:
    import keras

    model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(2, activation="softmax")])
    path = tmp_path / "tabular.keras"
    model.save(path)
    return path


@pytest.mark.parametrize("case, args, expect", [
    ("labels", ["--labels", "a,b,c", "--to", "tflite-fp32"], ["--labels gives 3", "outputs 2 classes"]),
    ("labels_file", ["--to", "tflite-fp32"], ["--labels gives 1", "outputs 2 classes"]),
    ("int8", ["--to", "tflite-fp32,tflite-int8"], ["tflite-int8", "--calib-data DIR"]),
    ("edgetpu", ["--to", "all"], ["edgetpu", "onnx-int8", "--calib-data DIR"]),
    ("text_h5", ["--to", "tflite-fp32"], ["is not an HDF5 file"]),
    ("two_inputs", ["--to", "tflite-fp32"], ["has 2 inputs", "left", "right"]),
    ("vector", ["--to", "tflite-fp32"], ["not an image batch", "[None, 10], a 2-D input"]),
    ("calib_dir", ["--to", "tflite-int8", "--calib-data", "nowhere"], ["--calib-data 'nowhere' is not a folder"]),
])
def test_bad_bring_your_own_inputs_exit_2_with_one_line(case, args, expect, softmax_keras, tmp_path, capsys,
                                                        monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = {"text_h5": tmp_path / "model.h5", "two_inputs": None, "vector": None}.get(
        case, softmax_keras)
    if case == "text_h5":
        model.write_text("this is not a model\n")
    elif case == "two_inputs":
        model = _two_input(tmp_path)
    elif case == "vector":
        model = _vector_input(tmp_path)
    if case == "labels_file":
        (tmp_path / "labels.txt").write_text("only_one\n")
        args = [*args, "--labels", str(tmp_path / "labels.txt")]
    out = tmp_path / "out"
    assert run_cli(["convert", str(model), *args, "-o", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("edgeproof: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for text in expect:
        assert text in lines[0], lines[0]
    assert not out.exists() or not any(out.iterdir())  # nothing written


def test_dynamic_size_needs_size_flag(tmp_path, capsys):
    import keras

    model = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(4, 3),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2, activation="softmax")])
    path = tmp_path / "any.keras"
    model.save(path)
    assert run_cli(["convert", str(path), "--to", "tflite-fp32", "-o", str(tmp_path / "o")]) == 2
    assert "pass --size HxW" in capsys.readouterr().err
    from edgeproof.convert.source import open_source

    src = open_source(path, {"size": (20, 30), "labels": ["a", "b"]})
    assert (src.preprocess.height, src.preprocess.width) == (20, 30)


def test_unconvertible_op_keeps_converted_formats(tmp_path, capsys):
    """One line naming the layer/op and the format, exit 2; the formats that converted are kept."""
    import keras
    import tensorflow as tf

    @keras.saving.register_keras_serializable("edgeproof_byom_tests")
    class CumProd(keras.layers.Layer):  # tf2onnx converts tf.math.cumprod, TFLite's builtins refuse it
        def call(self, x):
            return tf.math.cumprod(x, axis=1)

    inp = keras.Input((16, 16, 3))
    y = keras.layers.GlobalAveragePooling2D()(CumProd(name="cum_prod")(inp))
    path = tmp_path / "odd.keras"
    keras.Model(inp, keras.layers.Dense(2, activation="softmax")(y)).save(path)
    out = tmp_path / "out"
    assert run_cli(["convert", str(path), "--to", "tflite-fp32,onnx-fp32", "--labels", "a,b", "-o", str(out),
                    "--no-progress"]) == 2
    err = capsys.readouterr().err
    line = next(ln for ln in err.splitlines() if ln.startswith("edgeproof: error: tflite-fp32:"))
    assert "cum_prod" in line and "Cumprod" in line and "Traceback" not in err, line
    assert (out / "model.onnx-fp32.onnx").is_file() and not (out / "model.tflite-fp32.tflite").exists()
    assert _manifest(out)["onnx-fp32"]["status"] == "ok"


def test_run_and_convert_share_one_contract_flag_definition():
    from edgeproof.cli import contract_flags
    from edgeproof.cli.main import parse_args

    flags = ["--size", "32x48", "--mean", "1", "--std", "2,2,2", "--scale", "0.5", "--bgr", "--labels", "a,b"]
    run_args = parse_args(["run", "m.tflite", "img.png", *flags])
    conv_args = parse_args(["convert", "m.keras", "--to", "tflite-fp32", *flags])
    assert contract_flags.overrides_from(run_args) == contract_flags.overrides_from(conv_args) == {
        "size": (32, 48), "mean": [1.0], "std": [2.0, 2.0, 2.0], "scale": 0.5, "bgr": True, "labels": ["a", "b"]}


def test_class_scores_binary_heads_are_exact():
    from edgeproof.contract import class_scores, n_classes

    p = np.asarray([[0.0], [0.25], [1.0]], np.float32)
    np.testing.assert_array_equal(class_scores(p, "sigmoid"), [[1, 0], [0.75, 0.25], [0, 1]])
    z = np.asarray([[0.0], [2.0]], np.float32)
    np.testing.assert_allclose(class_scores(z, "sigmoid-logit")[:, 1], 1 / (1 + np.exp(-z[:, 0])), rtol=1e-6)
    np.testing.assert_allclose(class_scores(np.asarray([[1.0, 1.0]]), "logits"), [[0.5, 0.5]])
    assert n_classes(1, "sigmoid") == 2 and n_classes(5, "logits") == 5


def test_metadata_less_one_unit_model_scores_two_classes(tmp_path):
    """A .tflite made elsewhere with one sigmoid output: two classes, [1 - p, p], not one class at 1.0."""
    import keras

    from edgeproof.convert.tflite import to_tflite
    from edgeproof.runtime import load

    model = _tutorial_binary(SIZE)
    path = tmp_path / "elsewhere.tflite"
    path.write_bytes(to_tflite(model, "tflite-fp32"))
    x = np.random.default_rng(0).uniform(0, 255, (3, SIZE, SIZE, 3)).astype(np.float32)
    with load(path) as m:
        assert m.labels == ["class_0", "class_1"]
        scores = m.predict(x)
    p = np.asarray(keras.ops.convert_to_numpy(model(x, training=False)))[:, 0]
    np.testing.assert_allclose(scores, np.stack([1 - p, p], axis=1), atol=1e-6)


@pytest.mark.slow
def test_a_multi_label_head_reports_independent_probabilities(images, tmp_path, capsys):
    """Dense(4, sigmoid): detected as multi-label; run's scores are Keras' own sigmoids (each P(tag applies), not
    a share of 1), and inspect says so."""
    import keras

    keras.utils.set_random_seed(3)
    model = _multi_label(tmp_path)
    out = tmp_path / "art"
    rc = run_cli(["convert", str(model), "--to", "tflite-fp32,onnx-fp32", "--labels", "a,b,c,d", "--scale",
                  "0.00392157", "-o", str(out), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    assert "output head: multi-label" in capsys.readouterr().err
    from edgeproof.runtime import load
    from edgeproof.runtime.preprocess import load_image

    path = sorted(images.glob("*/*.png"))[0]
    ref = keras.saving.load_model(model, compile=False)
    for art in ("model.tflite-fp32.tflite", "model.onnx-fp32.onnx"):
        with load(out / art) as m:
            x = load_image(path, m.preprocess)[None]
            got, want = m.predict(x)[0], np.asarray(ref(x, training=False))[0]
        assert m.meta.output_kind == "multi-label" and np.abs(got - want).max() < 1e-5
        assert abs(float(got.sum()) - 1) > 0.1 and 0 < got.min() and got.max() < 1  # no softmax was applied
    assert run_cli(["inspect", str(out / "model.onnx-fp32.onnx")]) == 0
    assert "independent sigmoids" in capsys.readouterr().out
