"""Class names are checked, not only indices (issue 17, item 4), and a malformed split.json or a binary labels
file is one line with exit 2 in convert, parity and run (section 5)."""

from __future__ import annotations

import json
import shutil

import pytest
from _errors import one_error_line

from edgeproof.cli.main import run_cli
from edgeproof.parity.runner import label_mismatch


@pytest.fixture
def fake_run(tmp_path):
    """A run folder as train writes it; model.keras is never opened by these checks."""
    root = tmp_path / "run"
    root.mkdir()
    (root / "model.keras").write_bytes(b"PK\x03\x04 not opened")
    (root / "labels.txt").write_text("circle\nsquare\ntriangle\n")
    (root / "preprocess.json").write_text(json.dumps({"height": 8, "width": 8}))
    (root / "split.json").write_text(json.dumps({"classes": ["circle", "square", "triangle"],
                                                 "splits": {"test": [["x.png", 0]]}}))
    return root


def _both(root, tmp_path) -> list[list[str]]:
    return [["convert", str(root), "--to", "tflite-fp32", "-o", str(tmp_path / "out")], ["parity", str(root)]]


def test_a_permuted_labels_txt_is_refused_by_convert_and_parity(fake_run, tmp_path, capsys):
    (fake_run / "labels.txt").write_text("square\ncircle\ntriangle\n")
    for argv in _both(fake_run, tmp_path):
        assert run_cli(argv) == 2
        line = one_error_line(capsys.readouterr().err)
        assert 'line 1 is "square" but class 0 is "circle"' in line and "restore it" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("text, why", [
    ("{bad", "not valid JSON (Expecting"),
    ("[1, 2]", "a JSON list, not an object"),
    ('{"splits": {"test": [["only-a-path.png"]]}}', 'entry 0 of split \'test\' is ["only-a-path.png"]'),
    ('{"classes": ["circle", "square", "triangle"], "splits": {"test": [["a.png", 7]]}}', '["a.png", 7]'),
    ('{"classes": "abc", "splits": {}}', "'classes' is not a list"),
    ('{"splits": [1]}', "'splits' is not an object"),
])
def test_a_malformed_split_json_is_one_line_in_convert_and_parity(fake_run, tmp_path, capsys, text, why):
    (fake_run / "split.json").write_text(text)
    for argv in _both(fake_run, tmp_path):
        assert run_cli(argv) == 2
        line = one_error_line(capsys.readouterr().err)
        assert "is not a valid split.json" in line and why in line


def test_a_binary_labels_txt_is_one_line_in_convert_and_parity(fake_run, tmp_path, capsys):
    (fake_run / "labels.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe")
    for argv in _both(fake_run, tmp_path):
        assert run_cli(argv) == 2
        assert "is not UTF-8 text (byte" in one_error_line(capsys.readouterr().err)


def test_run_labels_pointing_at_a_binary_file_is_one_line(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    import cv2
    from _runtime_models import color_onnx, solid

    model = color_onnx(tmp_path / "m.onnx")
    cv2.imwrite(str(tmp_path / "x.png"), solid("red"))
    for content, why in ((b"\xff\xd8\xff\xe0 jpeg bytes", "is not UTF-8 text"), (b"a\x00b\nc\n", "holds NUL bytes")):
        (tmp_path / "labels.bin").write_bytes(content)
        assert run_cli(["run", str(model), str(tmp_path / "x.png"), "--labels", str(tmp_path / "labels.bin")]) == 2
        assert why in one_error_line(capsys.readouterr().err)


def test_label_mismatch_names_the_first_difference():
    ref = ["circle", "square", "triangle"]
    assert label_mismatch(ref, ref) is None
    assert label_mismatch(None, ref) is None  # no edgeproof metadata: judged by index only
    assert label_mismatch(["square", "circle", "triangle"], ref) == (
        "embedded labels differ from the reference's at 2 of 3 indices: class 0 is 'square' in the artifact but "
        "'circle' in the reference (labels permuted or replaced)")
    assert label_mismatch(ref[:2], ref) == "embeds 2 labels; the reference has 3 classes"


@pytest.mark.slow
def test_parity_fails_an_artifact_whose_embedded_labels_are_permuted(tiny_run, tiny_artifacts, tmp_path, capsys):
    pytest.importorskip("onnx")
    import onnx

    from edgeproof.convert.manifest import ArtifactResult, Manifest
    from edgeproof.runtime.integrity import sha256_file
    from edgeproof.runtime.metadata import read_metadata, set_onnx_metadata

    art = tmp_path / "art"
    art.mkdir()
    path = art / "model.onnx-fp32.onnx"
    shutil.copyfile(tiny_artifacts / path.name, path)
    meta = read_metadata(path)
    meta.labels = [meta.labels[1], meta.labels[0], *meta.labels[2:]]
    m = onnx.load(str(path))
    set_onnx_metadata(m, meta)
    onnx.save(m, str(path))
    manifest = Manifest(out_dir=art)  # an updated manifest vouches for the permuted file: it still fails
    manifest.put(ArtifactResult(format="onnx-fp32", path=path, status="ok", sha256=sha256_file(path),
                                bytes=path.stat().st_size))
    manifest.write()
    rc = run_cli(["parity", str(tiny_run), "--artifacts", str(art), "--json", "--no-triage", "--no-e2e",
                  "-o", str(tmp_path / "rep")])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 1
    failures = [f for f in doc["failures"] if f["metric"] == "labels"]
    assert failures and all(f["artifact"] == path.name for f in failures)
    assert "class 0 is 'square' in the artifact but 'circle' in the reference" in failures[0]["message"]
