"""A deliberately bad int8 artifact (calibrated on black images) fails the gate; --fix --promote repairs it in place."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgeproof.cli.main import run_cli

pytestmark = pytest.mark.slow


def _black_calibrated(tiny_run: Path, base: Path) -> Path:
    """int8 artifacts of tiny_run calibrated on 30 uniform black images through --calib-data (the run's train
    split replaced)."""
    import cv2

    black = base / "black"
    black.mkdir(parents=True)
    for i in range(30):
        cv2.imwrite(str(black / f"b{i:02d}.png"), np.zeros((32, 32, 3), np.uint8))
    art = base / "art"
    assert run_cli(["convert", str(tiny_run), "--to", "tflite-int8,onnx-fp32,onnx-int8", "--calib-data", str(black),
                    "-o", str(art), "--no-progress"]) == 0
    assert "--calib-data" in json.loads((art / "manifest.json").read_text())["calibration"]["source"]
    return art


def test_black_calibration_fails_naming_artifact_and_metric_and_promoted_fix_passes(tiny_run, tmp_path, capsys):
    art = _black_calibrated(tiny_run, tmp_path)
    code = run_cli(["parity", str(tiny_run), "--artifacts", str(art), "-o", str(tmp_path / "rep0"), "--no-triage",
                    "--no-e2e", "--no-progress", "--backends", "litert,onnxruntime"])
    err = capsys.readouterr().err
    assert code == 1
    assert "parity failed: model.tflite-int8.tflite [litert]: top-1 agreement" in err
    assert "parity failed: model.tflite-int8.tflite [litert]: Δaccuracy" in err and "not chance" in err
    assert "parity failed: model.onnx-int8.onnx [onnxruntime]" in err

    before = (art / "model.tflite-int8.tflite").read_bytes()
    code = run_cli(["parity", str(tiny_run), "--artifacts", str(art), "-o", str(tmp_path / "rep"), "--fix",
                    "--promote", "--no-e2e", "--no-progress", "--backends", "litert,onnxruntime", "--json"])
    out, err = capsys.readouterr()
    data = json.loads(out)
    assert code == 0, err
    assert {p["artifact"] for p in data["promoted"]} == {"model.tflite-int8.tflite", "model.onnx-int8.onnx"}
    for t in data["triage"]:
        assert t["fixes"][-1]["status"] == "pass" and t["fixes"][0]["step"] == "calibration"
    replaced = sorted(art.glob("model.tflite-int8.tflite.replaced-*"))
    assert len(replaced) == 1 and replaced[0].read_bytes() == before
    manifest = json.loads((art / "manifest.json").read_text())["artifacts"]
    entry = manifest["tflite-int8"]
    from edgeproof.runtime.integrity import sha256_file

    assert entry["sha256"] == sha256_file(art / "model.tflite-int8.tflite") and entry["status"] == "ok"
    assert entry["options"]["promoted"]["replaced_file"] == replaced[0].name and entry["options"]["converter"]
    # what is in place now passes on its own, and the runtime loads it (its sha256 matches the manifest)
    assert run_cli(["parity", str(tiny_run), "--artifacts", str(art), "-o", str(tmp_path / "rep2"), "--no-e2e",
                    "--no-progress", "--backends", "litert,onnxruntime"]) == 0


def test_promote_needs_fix(tiny_run, capsys):
    assert run_cli(["parity", str(tiny_run), "--promote", "--no-progress"]) == 2
    assert "--fix --promote" in capsys.readouterr().err


def test_edgetpu_is_never_promoted_to_a_fix_the_edge_tpu_cannot_run(tmp_path, caplog):
    """A passing int16x8 / float-layers fix of the edgetpu artifact is not Edge TPU-ready: it stays a suggestion."""
    from types import SimpleNamespace

    from edgeproof.parity.promote import promote_passing

    original = tmp_path / "model.edgetpu.tflite"
    original.write_bytes(b"original")
    fix = SimpleNamespace(status="pass", edgetpu_full=False, variant="int16x8: tflite-converter int16x8",
                          path=tmp_path / "fixed" / "model-fix-3-int16x8.edgetpu.tflite")
    report = SimpleNamespace(triage=[SimpleNamespace(format="edgetpu", artifact=original.name, fixes=[fix])], rows=[])
    reran = []
    with caplog.at_level("WARNING", logger="edgeproof.parity.promote"):
        done = promote_passing(report, tmp_path, lambda items: reran.append(items) or [])
    assert done == [] and reran == [] and original.read_bytes() == b"original"
    assert "not promoted" in caplog.text and "Edge TPU" in caplog.text
