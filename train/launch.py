"""`edgeproof train --workers N`: N local training processes on 127.0.0.1, as a real cluster would run.

Each worker is `python -m edgeproof train ...` with its own TF_CONFIG (the same code path as a cluster
of machines) and 1/N of the cores for TensorFlow's thread pools. Worker 0 is the chief: its output is
this command's output. The others write only to a log in a temporary folder, removed at the end.

The launcher never waits without a bound: it watches every worker; when one fails, the others are
stopped (SIGTERM, then SIGKILL after `GRACE` seconds), and one line says which worker died and how to
continue. Ports are picked free just before the start; every process is reaped before returning.
This module imports no TensorFlow.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edgeproof.train.distributed import WorkerLost

GRACE = 10.0  # seconds a stopped worker gets before SIGKILL
AFTER_CHIEF = 30.0  # seconds the other workers get to exit once the chief has finished
POLL = 0.1
ERROR_FILE = "worker-{rank}.error"  # a launched worker that lost the cluster writes its line here
LAUNCH_DIR_ENV = "EDGEPROOF_LAUNCH_DIR"


@dataclass
class Launch:
    """What happened: each worker's exit code, its pid and port (for checks that nothing is left)."""

    returncodes: list[int | None] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)
    error: str | None = None  # the one line when the run failed because of a worker

    @property
    def exit_code(self) -> int:
        if self.error is not None:
            return WorkerLost.exit_code
        return self.returncodes[0] or 0 if self.returncodes else 0  # the chief's (it printed any error)


def free_ports(n: int) -> list[int]:
    """n distinct ports that are free on 127.0.0.1 right now."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _how(rc: int) -> str:
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit code {rc}"


def _last_line(path: Path) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:200] if lines else ""


def _stop(procs: list[subprocess.Popen]) -> None:
    live = [p for p in procs if p.poll() is None]
    for p in live:
        p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + GRACE
    for p in live:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def launch_local(argv: list[str], workers: int, resume_hint: Callable[[], str], env: dict[str, str] | None = None) -> Launch:
    """Run `edgeproof <argv>` as `workers` local processes forming one cluster; wait for all of them.

    `argv` is the chief's command line; the other workers get it with --no-progress and without --json.
    `resume_hint()` ends the line printed when a worker dies (how to continue from the checkpoint).
    """
    base = dict(os.environ if env is None else env)
    base.pop("TF_CONFIG", None)
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    ports = free_ports(workers)
    hosts = [f"127.0.0.1:{p}" for p in ports]
    scratch = Path(tempfile.mkdtemp(prefix="edgeproof-workers-"))
    result = Launch(ports=ports)
    procs: list[subprocess.Popen] = []
    logs: list[Path | None] = []
    try:
        for rank in range(workers):
            child = {**base, "TF_CONFIG": json.dumps({"cluster": {"worker": hosts},
                                                       "task": {"type": "worker", "index": rank}}),
                     LAUNCH_DIR_ENV: str(scratch), "PYTHONUNBUFFERED": "1"}
            child.setdefault("TF_NUM_INTRAOP_THREADS", threads)  # N workers share the cores
            child.setdefault("TF_NUM_INTEROP_THREADS", threads)
            cmd = [sys.executable, "-m", "edgeproof", *argv]
            if rank == 0:
                procs.append(subprocess.Popen(cmd, env=child))
                logs.append(None)
                continue
            cmd = [a for a in cmd if a != "--json"] + ["--no-progress"]
            log = scratch / f"worker-{rank}.log"
            with open(log, "wb") as fh:
                procs.append(subprocess.Popen(cmd, env=child, stdout=fh, stderr=subprocess.STDOUT,
                                              stdin=subprocess.DEVNULL))
            logs.append(log)
        result.pids = [p.pid for p in procs]
        result.error = _watch(procs, logs, scratch, resume_hint)
    finally:
        _stop(procs)  # also on KeyboardInterrupt: no worker outlives the launcher
        result.returncodes = [p.returncode for p in procs]
        shutil.rmtree(scratch, ignore_errors=True)
    return result


def _watch(procs: list[subprocess.Popen], logs: list[Path | None], scratch: Path, resume_hint: Callable[[], str]) -> str | None:
    """Wait until every worker ended; on the first failure stop the rest. Returns the one error line, or
    None when every worker succeeded or the chief failed by itself (it printed its own line)."""
    n = len(procs)
    chief_done: float | None = None
    while True:
        codes = [p.poll() for p in procs]
        failed = [i for i, rc in enumerate(codes) if rc not in (None, 0)]
        if not failed:
            if all(rc == 0 for rc in codes):
                return None
            if codes[0] == 0:  # the run folder is written; the others have nothing left to do
                chief_done = chief_done or time.monotonic()
                if time.monotonic() - chief_done > AFTER_CHIEF:
                    return None  # the finally in launch_local stops them
            time.sleep(POLL)
            continue
        time.sleep(0.5)  # a moment for a peer that died at the same time to show its own exit code
        codes = [p.poll() for p in procs]
        _stop(procs)
        killed = [i for i, rc in enumerate(codes) if rc is not None and rc < 0]
        crashed = [i for i, rc in enumerate(codes) if rc not in (None, 0, WorkerLost.exit_code)]
        lost = [i for i, rc in enumerate(codes) if rc == WorkerLost.exit_code]
        if not killed and codes[0] not in (None, 0, WorkerLost.exit_code):
            return None  # the chief stopped on its own error (bad input, a full disk): its line is printed
        if killed or crashed:
            i = (killed or crashed)[0]
            role = " (the chief)" if i == 0 else ""
            said = _last_line(logs[i]) if logs[i] else ""
            said = f" (its last line: {said})" if said and codes[i] > 0 else ""
            return (f"worker {i}{role} of {n} (pid {procs[i].pid}) died: {_how(codes[i])}{said}; stopped the "
                    f"other workers; {resume_hint()}")
        i = lost[0]
        line = _last_line(scratch / ERROR_FILE.format(rank=i)) or "lost the training cluster"
        return f"{line}; stopped the other workers"
