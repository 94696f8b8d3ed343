"""Embedded metadata is bounded and validated at load (issue 17: item 2, item 6's labels, section 5's
labels null / non-integer height / NaN or tiny std): one line, exit 2, naming the field."""

from __future__ import annotations

import io
import zipfile

import pytest

from edgeproof.cli.main import run_cli
from edgeproof.errors import UsageError
from edgeproof.runtime.metadata import MAX_METADATA_BYTES, read_metadata

cv2 = pytest.importorskip("cv2")
pytest.importorskip("onnxruntime")

from _errors import one_error_line
from _raw_meta import onnx_with_meta
from _runtime_models import solid


def _fake_tflite(path, member: bytes):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("metadata.json", member)
    path.write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\x00" * 100 + buf.getvalue())
    return path


def test_a_metadata_bomb_is_refused_before_it_is_inflated(tmp_path):
    bomb = _fake_tflite(tmp_path / "bomb.tflite", b" " * (64 * MAX_METADATA_BYTES))  # 64 MiB in ~64 KB
    assert bomb.stat().st_size < MAX_METADATA_BYTES // 4
    with pytest.raises(UsageError, match="metadata.json is over the 1,048,576-byte limit"):
        read_metadata(bomb)


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "red.png"
    cv2.imwrite(str(path), solid("red"))
    return str(path)


@pytest.mark.parametrize("edit, pp_edit, reason", [
    ({"labels": None}, None, "labels is null; expected a list of class names"),
    ({"labels": "abc"}, None, "labels is a str; expected a list of class names"),
    ({"labels": [1, 2, 3]}, None, "label 1 is not a text"),
    ({"labels": ["x"] * 100_001}, None, "100,001 labels is over the limit of 100,000"),
    ({"labels": ["x" * 400] * 3000}, None, "over the 1,048,576-byte limit"),
    (None, {"height": 64.5}, "height 64.5 is not a whole number of pixels"),
    (None, {"height": True}, "height true is not a whole number"),
    (None, {"width": "64"}, 'width "64" is not a whole number'),
    (None, {"height": 20000}, "height 20000 is not a whole number of pixels in 1..16384"),
    (None, {"std": [float("nan")] * 3}, "std NaN is not a finite number"),
    (None, {"mean": [float("inf")] * 3}, "mean Infinity is not a finite number"),
    (None, {"std": [1e-30] * 3}, "would overflow float32"),
])
def test_invalid_metadata_is_one_line_exit_2_in_run_and_inspect(tmp_path, image, capsys, edit, pp_edit, reason):
    path = onnx_with_meta(tmp_path / "m.onnx", edit, pp_edit)
    assert run_cli(["run", str(path), image]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert reason in line and "m.onnx" in line and "re-convert" in line
    assert run_cli(["inspect", str(path), "--no-load"]) == 2
    out, err = capsys.readouterr()
    assert "metadata: embedded but damaged" in out and reason in one_error_line(err)
