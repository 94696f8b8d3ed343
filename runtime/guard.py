"""A guarded trial load: open a model in a child process first, for runtimes that can crash on bad files.

Each such backend hands over its `Trial` (the child's code, its runtime version and name). OpenCV DNN's
ONNX importer dies with SIGSEGV/SIGFPE on some damaged files (the fuzz test found them); no in-process
check catches every such case. So the file is first loaded (and run once on zeros) in a child with a time limit and an address-space limit
(RLIMIT_AS). A child killed by a signal, out of memory or out of time -> InvalidModel naming the file,
the runtime and what happened. The verdict is cached by sha256 (+ runtime version) under
$EDGEPROOF_CACHE/trials (default ~/.cache/edgeproof), so loading the same file again costs one hash.

A damaged file does not crash every runtime every time: LiteRT CompiledModel's child exited 0, -11, -11 on three
tries of one file, and its one lucky "ok" was cached for good. So a crash or an out-of-memory is final at once,
while "ok" and a clean "error" are cached only when `Trial.agree` children in a row gave the same verdict (3 for
CompiledModel, FLAKY_AGREE; 1 for OpenCV DNN and OpenVINO: no flaky child was seen there, and three children per
unknown file tripled the fuzz test's OpenVINO time).
A disagreement caches nothing, so the next load tries again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TIMEOUT_S = 60.0
MEMORY_BYTES = 4 << 30  # address space of the trial child (the runtime's mapped code counts too) ...
MEMORY_PER_FILE_BYTE = 8  # ... or 2 GiB + 8x the file for a big model, whichever is more
FLAKY_AGREE = 3  # children in a row that must agree before "ok" (or a clean "error") of a flaky runtime is cached
FINAL = ("crash", "memory")  # a property of the file: final after one child

OPENCV_TRIAL = """
import json, sys
import numpy as np
import cv2
cv2.setNumThreads(1)
net = cv2.dnn.readNetFromONNX(sys.argv[1])
shape, dtype = json.loads(sys.argv[2])
if shape:
    net.setInput(np.zeros(shape, dtype))
    net.forward()
"""


def cache_dir() -> Path:
    from edgeproof.paths import cache_dir as base

    return base("trials")


# The child limits itself before importing anything big (no preexec_fn: unsafe in a threaded parent).
_PRELUDE = ("import resource\n"
            "resource.setrlimit(resource.RLIMIT_AS, ({m}, {m}))\n"
            "resource.setrlimit(resource.RLIMIT_CORE, (0, 0))\n")  # a crash must not leave a core file behind


def run_trial(code: str, args: list[str], timeout: float = TIMEOUT_S, memory: int = MEMORY_BYTES) -> dict[str, Any]:
    """Run `code` (python -c) in a limited child: {"verdict": "ok"|"error"|"crash"|"memory"|"timeout", "detail"}.

    "error": the child raised an ordinary exception (the runtime rejects the file cleanly; the
    in-process load will raise the same error, so it is safe to attempt).
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENCV_FOR_THREADS_NUM": "1", "MALLOC_ARENA_MAX": "2",
           "PYTHONFAULTHANDLER": ""}
    try:
        proc = subprocess.run([sys.executable, "-c", _PRELUDE.format(m=int(memory)) + code, *args],
                              capture_output=True, timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired:
        return {"verdict": "timeout", "detail": f"did not finish within {timeout:g} s"}
    err = proc.stderr.decode("utf-8", "replace")
    last = next((ln.strip() for ln in reversed(err.splitlines()) if ln.strip()), "")
    if proc.returncode < 0:
        try:
            name = signal.Signals(-proc.returncode).name
        except ValueError:
            name = f"signal {-proc.returncode}"
        return {"verdict": "crash", "detail": name}
    if proc.returncode == 0:
        return {"verdict": "ok", "detail": None}
    if "MemoryError" in last or "Insufficient memory" in err or "bad_alloc" in err or "Failed to allocate" in err:
        return {"verdict": "memory", "detail": f"needs more than {memory >> 20} MiB"}
    return {"verdict": "error", "detail": last[:300]}


def agreed_trial(code: str, args: list[str], memory: int, agree: int = 1) -> tuple[dict[str, Any], bool]:
    """(the verdict, whether it may be cached): up to `agree` children, stopping at the first crash or OOM
    (final: cached) or the first verdict that differs (a flaky child: that verdict, never cached)."""
    first = None
    for _ in range(agree):
        result = run_trial(code, args, memory=memory)
        if result["verdict"] in FINAL:
            return result, True
        if result["verdict"] == "timeout":
            return result, False
        if first is None:
            first = result
        elif result["verdict"] != first["verdict"]:
            return (result if result["verdict"] != "ok" else first), False
    return first, True


@dataclass(frozen=True)
class Trial:
    """What a backend runs in the guarded child: `code` (python -c; argv: path, JSON [shape, dtype])."""

    runtime: str  # the cache key's prefix, e.g. the backend name
    label: str  # how messages name it, e.g. "OpenCV DNN"
    version: str  # the runtime's version: a new version tries the file again
    code: str
    agree: int = 1  # children in a row that must agree before "ok"/"error" is cached (FLAKY_AGREE if flaky)


def guarded_load(path: str | Path, trial: Trial, family: str, sha256: str | None, shape: list[int] | None,
                 dtype: str = "float32") -> None:
    """Raise InvalidModel when a trial load of `path` (the backend's `trial`) crashes, hangs or runs out of memory.

    `sha256` (what the manifest vouched for) does not skip it: a manifest proves integrity, never safety,
    since whoever can swap the model can rewrite the manifest. The verdict is cached by sha256, so a
    file costs one trial per runtime version.
    """
    from edgeproof.runtime.integrity import sha256_file
    from edgeproof.runtime.model_check import invalid

    path = Path(path)
    digest = sha256_file(path)
    entry = cache_dir() / f"{trial.runtime}-{trial.version}-{digest[:40]}.json"
    try:
        result = json.loads(entry.read_text())
        verdict = result["verdict"]
    except (OSError, ValueError, KeyError, TypeError):
        memory = max(MEMORY_BYTES, (2 << 30) + MEMORY_PER_FILE_BYTE * path.stat().st_size)
        result, agreed = agreed_trial(trial.code, [str(path), json.dumps([shape, dtype])], memory, trial.agree)
        verdict = result["verdict"]
        if agreed:  # a timeout is never kept: a slow machine may pass next time
            _store(entry, result)
    what = {"crash": f"it crashed the {trial.label} importer ({result['detail']})",
            "memory": f"loading it in {trial.label} {result['detail']}",
            "timeout": f"loading it in {trial.label} {result['detail']}"}.get(verdict)
    if what:
        raise invalid(path, family, f"{what} in a guarded trial load")


def _store(entry: Path, result: dict[str, Any]) -> None:
    try:
        from edgeproof.atomic import write_json

        entry.parent.mkdir(parents=True, exist_ok=True)
        write_json(entry, result)
    except OSError:  # a read-only cache only costs the trial next time
        pass
