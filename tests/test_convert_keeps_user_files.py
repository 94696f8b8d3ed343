"""convert -o DIR never replaces what is the user's (issue 24, item 3): a manifest.json edgeproof did not write,
or a file at an artifact's name that our manifest does not list, is refused with exit 2 and kept byte for byte."""

from __future__ import annotations

from pathlib import Path

import pytest
from _errors import one_error_line

from edgeproof.cli.main import run_cli

pytest.importorskip("tensorflow", reason="needs edgeproof[train]")

ARGS = ["--labels", "a,b,c", "--scale", "0.0039", "--to", "tflite-fp32", "--no-progress"]


@pytest.fixture(scope="module")
def bare_keras(tmp_path_factory) -> Path:
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    out = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(inp))
    path = tmp_path_factory.mktemp("m") / "m.keras"
    keras.Model(inp, out).save(path)
    return path


@pytest.mark.parametrize("name, content", [
    ("manifest.json", b'{"project": "my notes", "version": 3}\n'),  # valid JSON, someone else's
    ("manifest.json", b"not json at all\n"),
    ("model.tflite-fp32.tflite", b"the user's own file\n"),  # no manifest lists it
])
def test_convert_refuses_to_replace_a_users_file(bare_keras, tmp_path, capsys, name, content):
    from edgeproof.formats import FORMATS, artifact_filename

    assert artifact_filename(FORMATS["tflite-fp32"]) == "model.tflite-fp32.tflite"
    out = tmp_path / "out"
    out.mkdir()
    (out / name).write_bytes(content)
    assert run_cli(["convert", str(bare_keras), *ARGS, "-o", str(out)]) == 2
    line = one_error_line(capsys.readouterr().err, ignore_prefix="note:")
    assert name in line and "convert would replace" in line and "choose another -o" in line, line
    assert (out / name).read_bytes() == content
    assert sorted(p.name for p in out.iterdir()) == [name]  # nothing else written either


@pytest.mark.slow
def test_an_artifact_listed_in_our_manifest_is_still_replaced(bare_keras, tmp_path, capsys):
    import json

    out = tmp_path / "out"
    assert run_cli(["convert", str(bare_keras), *ARGS, "-o", str(out)]) == 0, capsys.readouterr().err
    first = json.loads((out / "manifest.json").read_text())["artifacts"]["tflite-fp32"]["created"]
    assert run_cli(["convert", str(bare_keras), *ARGS, "-o", str(out)]) == 0, capsys.readouterr().err
    assert json.loads((out / "manifest.json").read_text())["artifacts"]["tflite-fp32"]["created"] >= first
