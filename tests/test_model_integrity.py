"""Integrity (issue 8): a model beside a manifest.json must match the sha256 convert recorded.

load() refuses a mismatch (IntegrityError, exit 2) unless verify=False / --no-verify; run and bench
refuse, parity makes it a failed 'integrity' row (exit 1, named), inspect reports it. The manifest is
the real one edgeproof.convert writes (convert.manifest.Manifest).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgeproof.cli.main import run_cli
from edgeproof.errors import IntegrityError, InvalidModel, UsageError
from edgeproof.runtime import load
from edgeproof.runtime.integrity import expected_sha256, sha256_file, verify_manifest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
cv2 = pytest.importorskip("cv2")

from _runtime_models import color_onnx, solid  # noqa: E402


def _with_manifest(folder: Path, fmt: str = "onnx-fp32", **entry) -> Path:
    """color_onnx as OUT/model.<fmt>.onnx plus the manifest.json convert would write for it."""
    from edgeproof.convert.manifest import ArtifactResult, Manifest

    folder.mkdir(parents=True, exist_ok=True)
    path = color_onnx(folder / f"model.{fmt}.onnx")
    m = Manifest(out_dir=folder)
    fields = {"sha256": sha256_file(path), "bytes": path.stat().st_size, **entry}
    m.put(ArtifactResult(format=fmt, path=path, status=fields.pop("status", "ok"), **fields))
    m.write()
    return path


def _tamper(path: Path) -> None:
    """Same graph, one extra metadata entry: loads and predicts exactly as before, but other bytes."""
    import onnx

    model = onnx.load(str(path))
    extra = model.metadata_props.add()
    extra.key, extra.value = "note", "edited after convert"
    onnx.save(model, str(path))


@pytest.fixture
def img(tmp_path) -> Path:
    p = tmp_path / "red.png"
    cv2.imwrite(str(p), solid("red", 8, 8))
    return p


def test_sha256_file_matches_hashlib(tmp_path):
    p = tmp_path / "blob.bin"
    data = np.random.default_rng(0).integers(0, 256, 3 * (1 << 20) + 17, dtype=np.uint8).tobytes()  # > 1 chunk
    p.write_bytes(data)
    assert sha256_file(p) == hashlib.sha256(data).hexdigest()


def test_matching_manifest_loads_and_mismatch_is_refused(tmp_path):
    path = _with_manifest(tmp_path / "out")
    assert verify_manifest(path) == sha256_file(path)
    with load(path) as m:
        assert m.predict(np.zeros((1, 8, 8, 3), np.float32)).shape == (1, 3)
    want = sha256_file(path)
    _tamper(path)
    got = sha256_file(path)
    with pytest.raises(IntegrityError) as exc:
        load(path)
    msg = str(exc.value)
    assert isinstance(exc.value, UsageError) and exc.value.exit_code == 2
    assert "model.onnx-fp32.onnx" in msg and got[:12] in msg and want[:12] in msg
    assert "re-run 'edgeproof convert'" in msg and "--no-verify" in msg and "\n" not in msg
    with load(path, verify=False) as m:  # the edit is harmless: it runs as before
        assert m.predict(np.zeros((1, 8, 8, 3), np.float32)).shape == (1, 3)


def test_an_artifact_that_missed_the_held_out_gate_is_still_verified(tmp_path):
    path = color_onnx(tmp_path / "model.onnx-fp32.onnx")
    (tmp_path / "manifest.json").write_text(json.dumps({"artifacts": {"onnx-fp32": {
        "path": "model.onnx-fp32.onnx", "sha256": "0" * 64, "status": "failed",
        "options": {"held_out_gate": {"status": "failed"}}}}}))
    assert expected_sha256(path)[0] == "0" * 64
    with pytest.raises(IntegrityError):
        verify_manifest(path)


@pytest.mark.parametrize("manifest", [
    None,  # no manifest at all
    "not json {",  # unreadable: warned, not verified
    json.dumps([1, 2, 3]),  # odd shape
    json.dumps({"artifacts": {"onnx-fp32": {"path": "model.onnx-fp32.onnx", "status": "ok"}}}),  # no sha256
    json.dumps({"artifacts": {"onnx-fp32": {"path": "model.onnx-fp32.onnx", "sha256": "0" * 64,
                                            "status": "failed"}}}),  # a failed conversion vouches for nothing
    json.dumps({"artifacts": {"onnx-int8": {"path": "model.onnx-int8.onnx", "sha256": "0" * 64}}}),  # other file
    json.dumps({"artifacts": {"onnx-fp32": {"path": "model.onnx-fp32.onnx", "sha256": 42}}}),  # not a hash
])
def test_manifest_without_a_usable_entry_is_no_check(tmp_path, manifest, capsys):
    path = color_onnx(tmp_path / "model.onnx-fp32.onnx")
    if manifest is not None:
        (tmp_path / "manifest.json").write_text(manifest)
    assert expected_sha256(path)[0] is None
    assert verify_manifest(path) is None
    load(path).close()
    err = capsys.readouterr().err
    assert ("not valid JSON" in err) == (manifest == "not json {")


def test_manifest_that_is_a_folder_is_no_check_with_a_warning(tmp_path, capsys):
    path = color_onnx(tmp_path / "model.onnx-fp32.onnx")
    (tmp_path / "manifest.json").mkdir()  # unreadable without chmod tricks (tests run as root)
    assert verify_manifest(path) is None
    assert "cannot read" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["deep", "huge", "fifo"])
def test_hostile_manifest_is_no_check_with_a_warning_never_a_crash_or_hang(tmp_path, kind, capsys):
    """Nested 100,000 deep (RecursionError in json), over 16 MiB (not read whole), a FIFO (a read would block)."""
    import os

    from edgeproof.runtime.integrity import MAX_MANIFEST_BYTES

    path = _with_manifest(tmp_path / "out")
    mpath = path.parent / "manifest.json"
    mpath.unlink()
    if kind == "deep":
        mpath.write_text("[" * 100_000)
    elif kind == "huge":
        with open(mpath, "wb") as fh:
            fh.truncate(MAX_MANIFEST_BYTES + 1)  # sparse: costs no disk
    else:
        os.mkfifo(mpath)
    assert verify_manifest(path) is None
    load(path).close()
    err = capsys.readouterr().err
    assert {"deep": "not valid JSON", "huge": "over 16 MiB", "fifo": "not a regular file"}[kind] in err
    assert "not verified" in err


def test_a_symlink_is_verified_against_the_manifest_beside_the_real_file(tmp_path, capsys):
    path = _with_manifest(tmp_path / "out")
    elsewhere = tmp_path / "deploy"
    elsewhere.mkdir()
    links = [elsewhere / "current.onnx", path.parent / "current.onnx"]  # another folder; another name beside it
    for link in links:
        link.symlink_to(path)
        assert verify_manifest(link) == sha256_file(path)
    _tamper(path)
    for link in links:
        with pytest.raises(IntegrityError, match=rf"'{link}' does not match its manifest: .* but {path.parent}"):
            load(link)
        load(link, verify=False).close()
    assert run_cli(["inspect", str(links[0]), "--no-load", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["integrity"]["matches"] is False


def test_run_cli_refuses_a_tampered_artifact_unless_no_verify(tmp_path, img, capfd):
    path = _with_manifest(tmp_path / "out")
    _tamper(path)
    assert run_cli(["run", str(path), str(img)]) == 2
    out, err = capfd.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert out == "" and len(lines) == 1 and "does not match its manifest" in lines[0]
    assert run_cli(["run", str(path), str(img), "--no-verify", "--json"]) == 0
    out, _ = capfd.readouterr()
    assert json.loads(out.splitlines()[0])["top_k"][0]["label"] == "red"


def test_bench_cli_refuses_a_tampered_artifact_unless_no_verify(tmp_path, capfd):
    path = _with_manifest(tmp_path / "out")
    _tamper(path)
    quick = ["--runs", "2", "--warmup", "0", "--no-plot", "--no-baseline", "--no-isolate"]
    assert run_cli(["bench", str(path.parent), *quick]) == 2  # the folder form too: nothing measured
    out, err = capfd.readouterr()
    assert out == "" and "does not match its manifest" in err and len(err.strip().splitlines()) == 1
    assert run_cli(["bench", str(path), *quick, "--no-verify", "--json"]) == 0
    doc = json.loads(capfd.readouterr().out)
    assert doc["results"][0]["status"] == "ok" and doc["settings"]["verify"] is False


def test_inspect_reports_the_manifest_match_instead_of_refusing(tmp_path, capsys):
    path = _with_manifest(tmp_path / "out")
    assert run_cli(["inspect", str(path), "--no-load", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["integrity"]["matches"] is True
    _tamper(path)
    assert run_cli(["inspect", str(path), "--no-load"]) == 0
    assert "integrity: MISMATCH" in capsys.readouterr().out
    assert run_cli(["inspect", str(path), "--no-load", "--json", "--no-verify"]) == 0
    assert json.loads(capsys.readouterr().out)["integrity"]["matches"] is None


def test_a_vouched_file_still_gets_the_guarded_trial(tmp_path, monkeypatch):
    """OpenCV DNN: a manifest proves integrity, not safety (issue 17): the verified artifact is tried as well."""
    from edgeproof.runtime import guard

    monkeypatch.setenv("EDGEPROOF_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(guard, "OPENCV_TRIAL", "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n")
    path = _with_manifest(tmp_path / "out")
    with pytest.raises(InvalidModel, match=r"crashed the OpenCV DNN importer \(SIGSEGV\) in a guarded trial load"):
        load(path, backend="opencv")  # vouched by its manifest, and tried all the same
    lone = tmp_path / "lone" / path.name
    lone.parent.mkdir()
    shutil.copyfile(path, lone)
    with pytest.raises(InvalidModel, match=r"crashed the OpenCV DNN importer \(SIGSEGV\) in a guarded trial load"):
        load(lone, backend="opencv")
    with pytest.raises(InvalidModel, match="SIGSEGV"):
        load(path, backend="opencv", verify=False)  # --no-verify: the manifest vouches for nothing


@pytest.mark.slow
def test_parity_names_a_tampered_artifact_as_an_integrity_failure(tiny_run, tiny_artifacts, tmp_path, capsys):
    art = tmp_path / "art"
    art.mkdir()
    for name in ("model.onnx-fp32.onnx", "model.tflite-fp32.tflite", "manifest.json"):
        shutil.copyfile(tiny_artifacts / name, art / name)
    _tamper(art / "model.onnx-fp32.onnx")
    common = ["parity", str(tiny_run), "--artifacts", str(art), "--backends", "litert,onnxruntime", "--no-e2e",
              "--no-progress", "--no-triage"]
    assert run_cli([*common, "-o", str(tmp_path / "rep")]) == 1
    err = capsys.readouterr().err
    assert "model.onnx-fp32.onnx [onnxruntime]: refused: IntegrityError" in err
    assert "model.tflite-fp32.tflite" not in err  # the untouched artifact is judged and passes
    data = json.loads((tmp_path / "rep" / "parity.json").read_text())
    assert {(f["artifact"], f["metric"]) for f in data["failures"]} == {("model.onnx-fp32.onnx", "integrity")}
    assert run_cli([*common, "-o", str(tmp_path / "rep2"), "--no-verify"]) == 0  # same numbers: it passes
