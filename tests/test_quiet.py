"""A real convert and parity --fix print only edgeproof's own lines; library chatter goes to a log file."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from edgeproof.stderr_filter import TERMINAL, library_output_to

# What TensorFlow, absl, XNNPACK, the converters and quantizers print when nobody stops them.
CHATTER = re.compile(r"Saved artifact|TensorSpec|Captures:|fully_quantize|XNNPACK|UserWarning|Warning:|"
                     r"absl|^[IWE]\d{4} |tf\.lite\.Interpreter|Running Calibration|Traceback|oneDNN")
OURS = re.compile(r"^(note: |calibration: |manifest: |report: |triage |  (before|fix|promoted)|end-to-end: |"
                  r"edgeproof: error: parity failed: |model\.[\w.-]+ \[\w+\]: |search: |fix: |held-out gate: )")


def test_library_output_to_separates_native_and_python_chatter_from_our_lines(tmp_path, capfd):
    log = tmp_path / "rep" / "library-output.log"
    with library_output_to(log):
        os.write(2, b"native fd2 chatter\n")
        os.write(1, b"native fd1 chatter\n")
        print("python print chatter")
        print("python stderr chatter", file=sys.stderr)
        TERMINAL.write("our line\n")
    print("stdout after the block")
    out, err = capfd.readouterr()
    assert err == "our line\n"
    assert out == "stdout after the block\n"
    text = log.read_text()
    for s in ("native fd2 chatter", "native fd1 chatter", "python print chatter", "python stderr chatter"):
        assert s in text
    assert "our line" not in text


def test_library_output_to_nowhere_and_restores_streams(capfd):
    before = (sys.stdout, sys.stderr)
    with library_output_to(None):
        os.write(2, b"dropped\n")
        print("dropped too")
    assert (sys.stdout, sys.stderr) == before
    out, err = capfd.readouterr()
    assert "dropped" not in out + err


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, "-m", "edgeproof", *args], capture_output=True, text=True,
                          timeout=280, env=env)


@pytest.mark.slow
def test_real_convert_and_parity_fix_print_only_edgeproof_lines(tiny_run, tmp_path):
    art, rep = tmp_path / "art", tmp_path / "rep"
    conv = _cli("convert", str(tiny_run), "--to", "tflite-fp32,tflite-int8,onnx-int8", "-o", str(art),
                "--calib-count", "60", "--no-progress")
    assert conv.returncode == 0, conv.stderr
    par = _cli("parity", str(tiny_run), "--artifacts", str(art), "-o", str(rep), "--fix", "--strict-ties",
               "--no-progress", "--no-e2e", "--backends", "litert,onnxruntime")
    assert par.returncode in (0, 1), par.stderr
    for proc in (conv, par):
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert not [ln for ln in lines if CHATTER.search(ln)], proc.stderr
        assert all(OURS.match(ln) for ln in lines), proc.stderr
    assert (rep / "library-output.log").is_file() and not (art / "library-output.log").exists()
    assert Path(rep / "parity.md").is_file()
