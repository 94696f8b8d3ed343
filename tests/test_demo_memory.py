"""The demo's memory line counts every process of its tree, and parity's Keras side can live in a child."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgeproof.cli.demo_memory import TreeMemory


def _rss_mib() -> float:
    line = next(ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith("VmRSS"))
    return int(line.split()[1]) / 1024


def test_a_stage_counts_the_memory_of_a_child_it_starts():
    """A child holding 300 MiB while this process waits: the stage's figure has both (ru_maxrss alone would not)."""
    memory = TreeMemory()
    if not memory.sampled:
        pytest.skip("no /proc/PID/task/TID/children here: only per-process peaks are known")
    code = ("import sys\nx = b'\\x01' * (300 << 20)\nsys.stdout.write('ready\\n')\nsys.stdout.flush()\n"
            "sys.stdin.read()\n")
    with memory.stage("hold"):
        child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            assert child.stdout.readline() == b"ready\n"
            here = _rss_mib()
            time.sleep(0.5)  # ten samples
        finally:
            child.stdin.close()
            child.wait(timeout=30)
    assert memory.stages["hold"] >= here + 300 * 0.98
    line = memory.line()
    assert line.startswith("peak memory: ") and "hold" in line and "sum over the demo's processes" in line


BACKENDS = ["litert", "onnxruntime"]  # one runtime per file family: the Keras side is what is compared


@pytest.mark.slow
def test_parity_with_the_keras_side_in_a_child_judges_the_same_and_never_imports_tensorflow(tiny_run, tiny_artifacts):
    from edgeproof.parity import run_parity

    code = (f"import json, sys\nfrom edgeproof.parity import run_parity\n"
            f"rep = run_parity({str(tiny_run)!r}, artifacts_dir={str(tiny_artifacts)!r}, triage=False, write=False, "
            f"backends={BACKENDS!r}, keras_child=True)\n"
            "print(json.dumps({'tf': 'tensorflow' in sys.modules, 'correct': rep.reference['correct'], "
            "'rows': [[r.artifact, r.backend, r.status, r.comparison and r.comparison.task.top1_agree_count, "
            "r.comparison and float(r.comparison.tensor.max_abs)] for r in rep.rows], "
            "'drift': rep.e2e['preprocessing']['probs_max_abs']}))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    child = json.loads(done.stdout.strip().splitlines()[-1])
    assert child["tf"] is False  # the judging process loaded every runtime, never TensorFlow
    here = run_parity(tiny_run, artifacts_dir=tiny_artifacts, triage=False, write=False, backends=BACKENDS)
    assert child["correct"] == here.reference["correct"]
    rows = [[r.artifact, r.backend, r.status, r.comparison and r.comparison.task.top1_agree_count,
             r.comparison and float(r.comparison.tensor.max_abs)] for r in here.rows]
    assert [r[:4] for r in child["rows"]] == [r[:4] for r in rows]
    for a, b in zip(child["rows"], rows, strict=True):  # the same reference: the same |Δ| to float rounding
        assert (a[4] is None) == (b[4] is None) and (a[4] is None or abs(a[4] - b[4]) <= 1e-6)
    assert abs(child["drift"] - here.e2e["preprocessing"]["probs_max_abs"]) <= 1e-6
