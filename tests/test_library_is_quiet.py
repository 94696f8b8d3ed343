"""The library logs and reports progress as events; only the CLI draws (rich) or prints.

An application that embeds edgeproof (a server, a notebook) must be able to capture or silence
everything: no library module imports edgeproof.cli or rich, and a library call with logging left
unconfigured writes nothing to stderr except what Python's own last-resort handler prints for a
warning record.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ("runtime", "convert", "parity", "train", "devices")  # edgeproof.runtime, .convert, ...
FORBIDDEN = ("edgeproof.cli", "rich")


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            if node.module == "edgeproof":  # from edgeproof import cli
                found += [(node.lineno, f"edgeproof.{a.name}") for a in node.names]
    return found


def test_no_library_module_imports_the_cli_or_rich():
    bad = [f"{p.relative_to(ROOT)}:{line}: {name}"
           for pkg in LIBRARY for p in sorted((ROOT / pkg).rglob("*.py"))
           for line, name in _imports(p)
           if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)]
    assert not bad, "library modules must log (logging.getLogger(__name__)), not print through the CLI:\n" + \
        "\n".join(bad)


# A child process that imports and uses each library package with logging unconfigured. Python's
# last-resort handler is marked, so its lines can be told apart from anything else on stderr.
CHILD = r"""
import json, logging, sys
from pathlib import Path
logging.lastResort.setFormatter(logging.Formatter("LASTRESORT %(name)s: %(message)s"))
tmp = Path(sys.argv[1])
sys.path.insert(0, sys.argv[2])
from _runtime_models import color_onnx, solid
import cv2, numpy as np

import edgeproof.convert, edgeproof.devices, edgeproof.parity, edgeproof.runtime, edgeproof.train
from edgeproof.runtime import load
from edgeproof.runtime.pipeline import run_pipeline
from edgeproof.runtime.sources import open_source

model_path = color_onnx(tmp / "model.onnx-fp32.onnx")
(tmp / "manifest.json").write_text("not json {")  # verify_manifest warns: a WARNING record
imgs = tmp / "imgs"
imgs.mkdir()
for name in ("red", "green", "blue"):
    cv2.imwrite(str(imgs / f"{name}.png"), solid(name))
(imgs / "empty.png").write_bytes(b"")  # skipped with its reason, never printed by the library
results = []
with load(model_path) as model:
    summary = run_pipeline(model, open_source(str(imgs)), results.append)
    x = np.stack([np.full((8, 8, 3), v, np.float32) for v in (10.0, 200.0)])
    probs = model.predict(x)

from edgeproof.parity import compare
from edgeproof.formats import FORMATS
c = compare(probs, probs, None, FORMATS["onnx-fp32"].tolerance)

from edgeproof.devices import detect, list_profiles
profile, reasons = detect()
list_profiles()

from edgeproof.train.datasets import build_dataset
build_dataset("shapes", root=tmp / "data", image_size=16, per_class=12, seed=0)

print(json.dumps({"count": summary.count, "skipped": summary.skipped_total, "passed": c.passed,
                  "loaded": sorted(m for m in sys.modules if m == "rich" or m.startswith(("rich.", "edgeproof.cli")))}))
"""


def test_library_calls_import_no_cli_and_write_nothing_but_last_resort_warnings(tmp_path):
    r = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path), str(Path(__file__).parent)],
                       capture_output=True, text=True, timeout=240, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["count"] == 3 and out["skipped"] == 1 and out["passed"]
    assert out["loaded"] == [], f"library use imported {out['loaded']}"
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    others = [ln for ln in lines if not ln.startswith("LASTRESORT ")]
    assert not others, "the library wrote to stderr itself:\n" + "\n".join(others)
    # the warning record did reach the user through Python's own handler: the library logged it
    assert any("edgeproof.runtime.integrity: " in ln and "not valid JSON" in ln for ln in lines), lines


@pytest.mark.slow
def test_convert_and_train_report_progress_as_events_and_log_records(tmp_path, caplog):
    """The library's progress goes to the callback it is given; its notes are log records."""
    pytest.importorskip("tensorflow", reason="needs edgeproof[train]")
    import logging

    from _convert_helpers import fake_run, small_cnn

    from edgeproof.convert import convert_run

    run = fake_run(tmp_path / "run", small_cnn(16, 3), ["a", "b", "c"], 16)
    out = tmp_path / "out"
    out.mkdir()
    (out / ".model.tflite-fp32.tflite.999999-abcdefgh.tmp").write_bytes(b"left by a killed run")
    events = []
    with caplog.at_level(logging.INFO, logger="edgeproof"):
        convert_run(run, out, ["tflite-fp32", "tflite-fp16"], progress=events.append)
    kinds = [e.kind for e in events]
    assert kinds[0] == "start" and kinds[-1] == "stop"
    last = [e for e in events if e.kind == "task"][-1]
    assert last.completed == last.total == 2
    assert any("converting tflite-fp16" in e.description for e in events)
    assert any(r.name == "edgeproof.convert.pipeline" and "left by a killed earlier run" in r.getMessage()
               for r in caplog.records)
