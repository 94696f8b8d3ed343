"""`edgeproof demo --fast`: dataset -> train -> convert -> parity -> runtime, exit 0, files in place."""

from __future__ import annotations

import json

import pytest

from edgeproof.cli.main import run_cli
from edgeproof.formats import FORMATS, artifact_filename


@pytest.mark.slow
@pytest.mark.timeout(600)  # five processes that each import TensorFlow or every runtime: 240 s at load 12 on 2 cores
def test_demo_fast_end_to_end(tmp_path, capsys):
    pytest.importorskip("tensorflow", reason="needs edgeproof[train]")
    pytest.importorskip("skimage", reason="the textures dataset needs scikit-image")
    out = tmp_path / "demo"
    code = run_cli(["demo", "--fast", "-o", str(out), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-2000:]
    assert (out / "model.keras").is_file()
    entries = json.loads((out / "artifacts" / "manifest.json").read_text())["artifacts"]
    for fmt in FORMATS.values():  # in place, or replaced by a promoted fix of another format, named as such
        replaced_by = entries[fmt.name]["options"].get("replaced_by") if entries[fmt.name]["status"] == "replaced" \
            else None
        assert (out / "artifacts" / artifact_filename(FORMATS[replaced_by or fmt.name])).is_file(), fmt.name
    report = json.loads((out / "parity" / "parity.json").read_text())
    assert report["passed"] and report["images"]["n"] > 0
    assert {r["format"] for r in report["results"]} == set(FORMATS)
    assert (out / "parity" / "parity.md").is_file() and (out / "parity" / "accuracy_latency.png").is_file()
    assert "run folder" in captured.err and str(out / "parity" / "parity.md") in captured.err.replace("\n", "")
    assert " on litert:" in captured.err  # the TF-free runtime ran on sample images
    said = " ".join(captured.err.split())  # the console wraps long lines
    memory = said[said.index("peak memory: "):][:400]
    assert all(f"{stage} " in memory for stage in ("train", "convert", "parity")) and " MiB" in memory
    for p in report["promoted"]:  # what was promoted is said, with its format and its speed
        assert f"promoted: {p['variant']}" in captured.err.replace("\n", "")


def test_demo_help_and_bad_output(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        run_cli(["demo", "--help"])
    assert exc.value.code == 0 and "--fast" in capsys.readouterr().out
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert run_cli(["demo", "--fast", "-o", str(blocker), "--no-progress"]) == 2
    assert "is a file" in capsys.readouterr().err
