"""The parity table reads in an 80-120 column terminal; --wide shows every column; parity.md keeps them all."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from rich.cells import cell_len

from edgeproof.cli.parity_table import print_table
from edgeproof.formats import FORMATS
from edgeproof.parity.gate import compare
from edgeproof.parity.report import COLUMNS, markdown
from edgeproof.parity.runner import Row


def _report() -> SimpleNamespace:
    rng = np.random.default_rng(0)
    ref = rng.dirichlet(np.ones(12) * 0.2, 252)
    y = ref.argmax(1)
    rows = []
    for name, backend in (("model.tflite-int16x8.tflite", "litert-compiled"), ("model.onnx-int8.onnx", "openvino"),
                          ("model.tflite-fp16.tflite", "litert")):
        fmt = FORMATS[name.split(".")[1]]
        cand = np.clip(ref + rng.normal(0, 0.003, ref.shape), 0, None)
        cand[:3] = np.roll(cand[:3], 1, axis=1)
        r = Row(name, Path(name), fmt.name, backend, "fail", size_bytes=1_234_567, latency_p50_ms=16.512,
                reason="not in the format's backends list (judged anyway because it runs) " * 2)
        r.comparison = compare(ref, cand, y, fmt.tolerance)
        r.status = r.comparison.verdict
        rows.append(r)
    rows.append(Row("model.edgetpu.tflite", Path("model.edgetpu.tflite"), "edgetpu", "openvino", "unsupported",
                    "not in edgetpu's backends; RuntimeError: unsupported op " + "x" * 200, 4096))
    return SimpleNamespace(reference={"accuracy": 0.9, "correct": 227, "n": 252, "latency_p50_ms": 1.23},
                           images_source="runs/demo test split (252 images, 12 classes)", rows=rows,
                           run_dir=Path("runs/demo"), artifacts_dir=Path("runs/demo/artifacts"), n_images=252,
                           passed=False, failures=[], e2e=None, triage=[], promoted=[])


def _header(out: str) -> str:
    return next(line for line in out.splitlines() if "artifact" in line)


@pytest.mark.parametrize("width", [80, 100, 120])
def test_the_table_fits_the_terminal_and_keeps_what_the_gate_judged(width, capsys):
    print_table(_report(), width=width)
    out, err = capsys.readouterr()
    table = out.split("\n  ")[0]  # the notes under the table wrap like any text
    assert max(cell_len(line) for line in table.splitlines()) <= width
    head = _header(out)
    for col in ("artifact", "backend", "status", "top-1 agree", "Δacc pp", "SNR dB"):
        assert col in head, (col, head)
    assert "tflite-int16x8" in out and "litert-compiled" in out and "FAIL" in out and "unsupported" in out
    assert "--wide shows them" in out
    assert "6 flipped (3 near-tie)" in out  # the note is kept: in its column or under the table


def test_wide_shows_every_column_and_the_markdown_keeps_them(capsys):
    rep = _report()
    print_table(rep, wide=True)
    out, err = capsys.readouterr()
    head = _header(out)
    assert all(c.split()[0] in out for c in COLUMNS), head
    assert "(not shown at" not in out and "tflite-int16x8.tflite" in out
    md = markdown(rep)
    assert "| " + " | ".join(c.replace("|", "\\|") for c in COLUMNS) + " |" in md
