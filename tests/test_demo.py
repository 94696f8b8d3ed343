"""`edgeproof demo --fast`: dataset -> train -> convert -> parity -> runtime, exit 0, files in place."""

from __future__ import annotations

import json

import pytest

from edgeproof.cli.main import run_cli
from edgeproof.formats import FORMATS, artifact_filename


@pytest.mark.slow
def test_demo_fast_end_to_end(tmp_path, capsys):
    pytest.importorskip("tensorflow", reason="needs edgeproof[train]")
    pytest.importorskip("skimage", reason="the textures dataset needs scikit-image")
    out = tmp_path / "demo"
    code = run_cli(["demo", "--fast", "-o", str(out), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-2000:]
    assert (out / "model.keras").is_file()
    for fmt in FORMATS.values():
        assert (out / "artifacts" / artifact_filename(fmt)).is_file()
    report = json.loads((out / "parity" / "parity.json").read_text())
    assert report["passed"] and report["images"]["n"] > 0
    assert {r["format"] for r in report["results"]} == set(FORMATS)
    assert (out / "parity" / "parity.md").is_file() and (out / "parity" / "accuracy_latency.png").is_file()
    assert "run folder" in captured.err and str(out / "parity" / "parity.md") in captured.err.replace("\n", "")
    assert "model.tflite-int8.tflite on litert" in captured.err  # the TF-free runtime ran on sample images


def test_demo_help_and_bad_output(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        run_cli(["demo", "--help"])
    assert exc.value.code == 0 and "--fast" in capsys.readouterr().out
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert run_cli(["demo", "--fast", "-o", str(blocker), "--no-progress"]) == 2
    assert "is a file" in capsys.readouterr().err
