"""The tensor limits apply to the shapes the runtime really uses, whatever vouches for the file (issue 17, item 1)."""

from __future__ import annotations

import struct
from dataclasses import replace

import pytest

from edgeproof.cli.main import run_cli
from edgeproof.errors import InvalidModel
from edgeproof.runtime import load
from edgeproof.runtime.integrity import sha256_file
from edgeproof.runtime.model_check import FlatBuffer

pytest.importorskip("ai_edge_litert")


@pytest.fixture(scope="module")
def tflite(tmp_path_factory):
    pytest.importorskip("tensorflow", reason="builds its tiny models with edgeproof[train]")
    from _runtime_models import tiny_models

    return tiny_models().files["tflite-fp32"]  # 32x32 input, carries edgeproof metadata


def _vouch(path):
    """The manifest.json convert would write beside `path`, recording its current sha256."""
    from edgeproof.convert.manifest import ArtifactResult, Manifest

    m = Manifest(out_dir=path.parent)
    m.put(ArtifactResult(format="tflite-fp32", path=path, status="ok", sha256=sha256_file(path),
                         bytes=path.stat().st_size))
    m.write()


def test_a_preprocess_size_from_metadata_alone_is_checked_on_the_prepared_shapes(tflite, tmp_path, capsys):
    from edgeproof.runtime.metadata import read_metadata, strip_tflite_metadata, tflite_with_metadata

    meta = read_metadata(tflite)
    meta = replace(meta, preprocess=replace(meta.preprocess, height=8000, width=8000))
    path = tmp_path / "model.tflite-fp32.tflite"
    path.write_bytes(tflite_with_metadata(strip_tflite_metadata(tflite.read_bytes()), meta))
    with pytest.raises(InvalidModel, match=r"with its input \[1, 8000, 8000, 3\] tensor \d+ .* becomes "
                                           r"\[1, 7998, 7998, 8\] \(1.91 GiB, limit 1024 MiB\)"):
        load(path)
    _vouch(path)  # ... and a manifest vouching for the file changes nothing
    with pytest.raises(InvalidModel, match=r"becomes \[1, 7998, 7998, 8\]"):
        load(path)
    import cv2
    from _runtime_models import solid

    image = tmp_path / "x.png"
    cv2.imwrite(str(image), solid("red"))
    assert run_cli(["run", str(path), str(image)]) == 2
    assert "1.91 GiB, limit 1024 MiB" in capsys.readouterr().err


def test_a_vouched_file_with_a_patched_input_is_still_refused(tflite, tmp_path):
    data = bytearray(tflite.read_bytes())
    fb = FlatBuffer(data)
    sg = fb.tables(fb.table(0), 2)[0]
    at = fb.vector(fb.tables(sg, 0)[fb.ints(sg, 1)[0]], 0, 4)[0]
    struct.pack_into("<4i", data, at, 1, 8000, 8000, 3)
    path = tmp_path / "model.tflite-fp32.tflite"
    path.write_bytes(bytes(data))
    _vouch(path)
    with pytest.raises(InvalidModel, match=r"becomes \[1, 7998, 7998, 8\]"):
        load(path)


def test_the_declared_size_still_loads(tflite):
    with load(tflite) as m:
        assert m.preprocess.height == 32
