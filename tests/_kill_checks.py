"""Kill-safety helpers shared by test_interrupt and test_disk_full_and_locks: spawn `edgeproof` in a child,
SIGKILL it at a chosen point, then check that nothing at a final name is incomplete."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

TEMP = re.compile(r"^\..+\.\d+-[a-z0-9_]{8}\.(tmp|old|probe)(\.[a-z]+)?$")  # edgeproof/atomic.py's temp names
# tiny_run's configuration (tests/conftest.py), so its model is the uninterrupted reference
TINY = ["--img-size", "32", "--epochs", "4", "--batch-size", "32", "--lr", "3e-3", "--seed", "0", "--no-progress"]
SMALL = ["--img-size", "16", "--epochs", "2", "--batch-size", "32", "--lr", "3e-3", "--seed", "0", "--no-progress"]
KILLED = -signal.SIGKILL


def env() -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def spawn(args: list[str], tmp_path: Path, hook: str = "") -> subprocess.Popen:
    """`python -m edgeproof ARGS` (after `hook`, Python run first in the child), output to a log file."""
    code = f"import sys\n{textwrap.dedent(hook)}\nfrom edgeproof.cli.main import run_cli\nsys.exit(run_cli({args!r}))"
    log = open(tmp_path / f"child-{time.monotonic_ns()}.log", "w+b")  # noqa: SIM115 - closed by _finish
    proc = subprocess.Popen([sys.executable, "-c", code], env=env(), stdout=log, stderr=subprocess.STDOUT)
    proc.log = log
    return proc


def finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str]:
    rc = proc.wait(timeout=timeout)
    proc.log.seek(0)
    out = proc.log.read().decode(errors="replace")
    proc.log.close()
    return rc, out


def kill_when(proc: subprocess.Popen, reached, timeout: float = 120) -> None:
    """SIGKILL `proc` as soon as `reached()` is true (polled every 5 ms)."""
    end = time.monotonic() + timeout
    while not reached():
        if proc.poll() is not None:
            rc, out = finish(proc)
            pytest.fail(f"the child exited ({rc}) before the kill point:\n{out[-3000:]}")
        assert time.monotonic() < end, "kill point not reached in time"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert finish(proc)[0] == KILLED


def hidden_are_temps(folder: Path) -> list[str]:
    """Names of the hidden leftovers in `folder`; every one must be one of our temp names."""
    hidden = [p.name for p in folder.iterdir() if p.name.startswith(".") and not p.name.endswith(".partial")]
    assert all(TEMP.match(n) for n in hidden), hidden
    return hidden


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- checks of what a kill left


def check_checkpoint(partial: Path) -> dict:
    """The checkpoint's committed files are complete: state.json parses, its model loads, its npz reads."""
    import keras

    state = json.loads((partial / "state.json").read_text())
    model = keras.saving.load_model(partial / state["model_file"], compile=True)
    assert model.optimizer is not None and int(model.optimizer.iterations.numpy()) > 0  # optimizer state kept
    with np.load(partial / state["best_file"]) as f:
        assert len(f.files) == len(model.get_weights())
    visible = {p.name for p in partial.iterdir() if not p.name.startswith(".")}
    assert {"lock", "state.json", state["model_file"], state["best_file"]} <= visible
    # A kill after the commit but before the clean-up leaves earlier (complete) epochs' files too.
    rest = visible - {"lock", "state.json", state["model_file"], state["best_file"]}
    assert all(re.match(r"^(epoch|best)-\d{4}\.[0-9a-f]{8}\.(keras|npz)$", n) for n in rest), rest
    hidden_are_temps(partial)
    return state


def check_run_folder(run: Path, before: dict[str, bytes] | None) -> None:
    """A run folder at the destination is the old complete one (byte for byte), or there is none."""
    if before is None:
        assert not run.exists(), sorted(p.name for p in run.iterdir())
    else:
        assert snapshot(run) == before
    hidden_are_temps(run.parent)


def check_artifacts(out: Path) -> dict[str, dict]:
    """Every file at a final name in OUT is complete: manifest.json parses; every artifact loads through
    the runtime (which refuses a sha256 mismatch) and matches its entry when the entry has a sha256."""
    from edgeproof.runtime import load
    from edgeproof.runtime.integrity import sha256_file

    entries: dict[str, dict] = {}
    if (out / "manifest.json").exists():
        entries = {e["path"]: e for e in json.loads((out / "manifest.json").read_text())["artifacts"].values()
                   if e.get("path")}
    for path in out.iterdir():
        if path.name.startswith(".") or path.name == "manifest.json":
            continue
        with load(path) as model:
            pp = model.preprocess
            y = model.predict(np.full((1, pp.height, pp.width, 3), 100, np.float32))
            assert y.shape[0] == 1 and np.isfinite(y).all()
        entry = entries.get(path.name)
        if entry and entry.get("sha256"):
            assert entry["sha256"] == sha256_file(path) and entry["status"] == "ok"
    hidden_are_temps(out)
    return entries
