"""A valid file a backend cannot run says why in one short phrase (issue 24, item 5): a just-written int16x8
file showed "InvalidModel: ... is not a valid TFLite model: it loaded but litert-compiled failed to run it
(ValueError: Unsupported dtype: int16); it may be truncated, damaged ..." on LiteRT CompiledModel, and the
parity table cut that note off."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeproof.errors import InvalidModel, UnsupportedModel


def test_an_unsupported_row_says_why_in_one_short_phrase(tmp_path):
    from edgeproof.formats import FORMATS
    from edgeproof.parity.runner import error_row

    path = tmp_path / "model.tflite-int16x8.tflite"
    path.write_bytes(b"x")
    for why, phrase in [
        ("UnsupportedModel: 'model.tflite-int16x8.tflite' has an int16 input, which LiteRT CompiledModel's tensor "
         "buffers cannot hold (they take float32, float16, int32, int8, uint8, bool); run it with --backend litert",
         "has an int16 input, which LiteRT CompiledModel's tensor buffers cannot hold"),
        ("InvalidModel: model.tflite-int16x8.tflite is not a valid TFLite model: it loaded but opencv failed to run "
         "it (error: (-215:Assertion failed) blobs.size()); it may be truncated, damaged or another type of file",
         "it loaded but opencv failed to run it"),
    ]:
        row = error_row(path, FORMATS["tflite-int16x8"], "litert-compiled", (why, False), listed=False)
        assert row.status == "unsupported" and not row.failures
        assert row.reason == f"not in tflite-int16x8's backends: {phrase}", row.reason
        assert len(row.reason) <= 120


@pytest.mark.slow
def test_a_just_written_int16x8_file_names_its_int16_io_on_litert_compiled(tmp_path, capsys):
    pytest.importorskip("tensorflow", reason="needs edgeproof[train]")
    pytest.importorskip("ai_edge_litert")
    import cv2
    import keras
    from _errors import one_error_line

    from edgeproof.cli.main import run_cli
    from edgeproof.runtime import load

    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inp)
    out = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    keras.Model(inp, out).save(tmp_path / "m.keras")
    rng = np.random.default_rng(0)
    (tmp_path / "cal" / "a").mkdir(parents=True)
    for i in range(12):
        cv2.imwrite(str(tmp_path / "cal" / "a" / f"{i}.png"), rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
    assert run_cli(["convert", str(tmp_path / "m.keras"), "--labels", "a,b,c", "--scale", "0.0039", "--to",
                    "tflite-int16x8", "--calib-data", str(tmp_path / "cal"), "--calib-count", "12", "-o",
                    str(tmp_path / "out"), "--no-progress"]) == 0
    capsys.readouterr()
    art = Path(tmp_path / "out" / "model.tflite-int16x8.tflite")
    with pytest.raises(UnsupportedModel) as exc:
        load(art, backend="litert-compiled")
    assert not isinstance(exc.value, InvalidModel)  # the file is fine: not "truncated, damaged"
    img = tmp_path / "x.png"
    cv2.imwrite(str(img), np.zeros((16, 16, 3), np.uint8))
    assert run_cli(["run", str(art), str(img), "--backend", "litert-compiled"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "int16 input" in line and "--backend litert or openvino" in line and "damaged" not in line, line
    with load(art, backend="litert") as m:  # a backend the format lists runs it
        assert m.predict(np.zeros((1, 16, 16, 3), np.float32)).shape == (1, 3)
