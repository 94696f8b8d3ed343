"""The host's side of the emulated runtime: hand tensors to edgeproof.targets.worker under qemu, read the results."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeproof.errors import EdgeproofError
from edgeproof.targets.sysroot import Sysroot

PROBE_TIMEOUT_S = 120.0


@dataclass
class Job:
    """One artifact for one backend on one preprocessed batch."""

    path: Path
    backend: str
    x: np.ndarray
    verify: bool = True
    trust_model: bool = False


@dataclass
class JobResult:
    probs: np.ndarray | None  # None: it failed (error says why)
    format: str | None = None
    error: str = ""
    integrity: bool = False


def _emulated(sysroot: Sysroot, args: list[str], timeout_s: float) -> subprocess.CompletedProcess:
    try:
        done = sysroot.run_python(["-m", "edgeproof.targets.worker", *args], timeout_s=timeout_s)
    except subprocess.TimeoutExpired:
        raise EdgeproofError(f"the emulated {sysroot.target.name} runtime took longer than {timeout_s:g} s") from None
    if done.returncode != 0:
        tail = [ln for ln in done.stderr.splitlines() if ln.strip()][-1:] or [f"exit {done.returncode}"]
        raise EdgeproofError(f"the emulated {sysroot.target.name} runtime failed: {tail[0][:300]}")
    return done


def probe(sysroot: Sysroot) -> dict:
    """What the emulated userland reports (edgeproof.targets.worker.probe)."""
    return json.loads(_emulated(sysroot, ["--probe"], PROBE_TIMEOUT_S).stdout.strip().splitlines()[-1])


def run_jobs(sysroot: Sysroot, jobs: list[Job], timeout_s: float) -> tuple[list[JobResult], dict]:
    """Every job in one emulated process (its start and imports cost seconds under qemu); (results, probe)."""
    from edgeproof.atomic import scratch_dir

    with scratch_dir("target") as tmp:
        items = []
        for i, j in enumerate(jobs):
            np.save(tmp / f"in{i}.npy", np.ascontiguousarray(j.x, dtype=np.float32))
            items.append({"path": str(Path(j.path).resolve()), "backend": j.backend, "input": str(tmp / f"in{i}.npy"),
                          "output": str(tmp / f"out{i}.npy"), "verify": j.verify,
                          "trust_model": j.trust_model})
        (tmp / "job.json").write_text(json.dumps({"items": items, "result": str(tmp / "result.json")}))
        _emulated(sysroot, [str(tmp / "job.json")], timeout_s)
        done = json.loads((tmp / "result.json").read_text())
        out = []
        for i, r in enumerate(done["results"]):
            if r["ok"]:
                out.append(JobResult(np.load(tmp / f"out{i}.npy"), r.get("format")))
            else:
                out.append(JobResult(None, error=r["error"], integrity=r.get("integrity", False)))
        return out, done["probe"]
