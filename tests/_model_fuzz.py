"""Model-file fuzzing: deterministic mutations and a crash-isolating worker (used by test_model_fuzz.py).

`mutate(data, seed)` is a pure function: the same bytes and seed give the same variant, and the
kind of damage is part of its id (``truncate``, ``flip``, ``header``, ``zero``, ``splice``, ``shape``).
The worker loads each variant with ``edgeproof.runtime.load`` (+ one predict) in its own process, so a
segfault/abort/hang kills only the worker; the parent sees which variant was running and reports it
with a one-line repro command:

    python tests/_model_fuzz.py repro SEED_MODEL BACKEND SEED
"""

from __future__ import annotations

import json
import os
import random
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

KINDS = ("truncate", "flip", "header", "zero", "splice", "shape")
HUGE = (1 << 30, (1 << 31) - 1, 1 << 20, 65536, 46341)


def mutate(data: bytes, seed: int) -> tuple[str, bytes]:
    """(kind, damaged bytes): seed -> mutation is a pure function (random.Random(seed) only)."""
    rng = random.Random(seed)
    kind = KINDS[seed % len(KINDS)]
    b = bytearray(data)
    n = len(b)
    if kind == "truncate":
        cut = rng.choice((0, 1, 4, 7, 8, 16, rng.randrange(n), rng.randrange(n), n - 1, n // 2))
        return kind, bytes(b[:cut])
    if kind == "flip":
        for _ in range(rng.choice((1, 1, 2, 4, 16, 64))):
            b[rng.randrange(n)] ^= rng.randrange(1, 256)
    elif kind == "header":
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(min(64, n))] ^= rng.randrange(1, 256)
    elif kind == "zero":  # a run of zero bytes (a torn write, a bad sector)
        start = rng.randrange(n)
        end = min(n, start + rng.choice((4, 16, 256, 4096)))
        b[start:end] = bytes(end - start)
    elif kind == "splice":  # a block copied over another place (offsets now point at the wrong things)
        size = rng.choice((4, 8, 64, 512))
        src, dst = rng.randrange(n), rng.randrange(n)
        chunk = bytes(b[src:src + size])
        b[dst:dst + len(chunk)] = chunk
    else:  # "shape": an int32 that looks like a small dimension (1..64) becomes huge
        hits = [i for i in range(0, n - 3, 4) if 1 <= struct.unpack_from("<i", b, i)[0] <= 64]
        for i in rng.sample(hits, min(len(hits), rng.choice((1, 2, 3)))) if hits else []:
            struct.pack_into("<i", b, i, rng.choice(HUGE))
    return kind, bytes(b[:n])


@dataclass
class Job:
    id: str  # "<seed model name>:<backend>:<seed>:<kind>"
    source: str
    backend: str
    seed: int


def outcome_of(path: Path, backend: str) -> tuple[str, str]:
    """('ok', shape) or ('error', 'Type: message') or ('bad', why) for one file, in this process."""
    import numpy as np

    from edgeproof.errors import InvalidModel, UsageError
    from edgeproof.runtime import load

    try:
        with load(path, backend=backend, verify=False, threads=1) as m:
            pp = m.preprocess
            p = m.predict(np.zeros((1, pp.height, pp.width, 3), np.float32))
    except (InvalidModel, UsageError) as exc:
        msg = str(exc)
        if "\n" in msg or not msg or len(msg) > 600:
            return "bad", f"{type(exc).__name__} message is not one short line: {msg[:200]!r}"
        return "error", f"{type(exc).__name__}: {msg}"
    except BaseException as exc:  # noqa: BLE001 - anything else is what the fuzz test exists to find
        return "bad", f"{type(exc).__name__}: {str(exc)[:300]}"
    if p.ndim != 2 or p.shape[0] != 1 or p.shape[1] < 1 or not np.isfinite(p).all():
        return "bad", f"loaded but predict gave {p.shape} {p.dtype} finite={bool(np.isfinite(p).all())}"
    return "ok", str(p.shape)


def worker(jobs_file: str, results_file: str) -> None:
    """Run each job; 'start' before, 'result' after (flushed), so the parent can attribute a crash."""
    jobs = [Job(**j) for j in json.loads(Path(jobs_file).read_text())]
    tmp = Path(tempfile.mkdtemp(prefix="edgeproof-fuzz-"))
    cache: dict[str, bytes] = {}
    with open(results_file, "a", buffering=1) as res:
        for job in jobs:
            data = cache.get(job.source) or cache.setdefault(job.source, Path(job.source).read_bytes())
            _kind, variant = mutate(data, job.seed)
            path = tmp / f"v{job.seed}{Path(job.source).suffix}"
            path.write_bytes(variant)
            before = (os.fstat(1).st_size, os.fstat(2).st_size)
            res.write(json.dumps({"start": job.id}) + "\n")
            t0 = time.perf_counter()
            outcome, detail = outcome_of(path, job.backend)
            noise = (os.fstat(1).st_size - before[0], os.fstat(2).st_size - before[1])
            if outcome != "bad" and any(noise):
                outcome, detail = "bad", f"wrote {noise[0]} B to stdout / {noise[1]} B to stderr ({detail[:120]})"
            res.write(json.dumps({"id": job.id, "outcome": outcome, "detail": detail,
                                  "s": round(time.perf_counter() - t0, 4)}) + "\n")
            path.unlink()


def repro_line(job: Job) -> str:
    return f"python tests/_model_fuzz.py repro {job.source} {job.backend} {job.seed}"


def run_jobs(jobs: list[Job], timeout_s: float = 120.0, env: dict | None = None) -> dict[str, dict]:
    """Run `jobs` in worker processes, restarting after a crash; every job gets a result dict."""
    results: dict[str, dict] = {}
    todo = list(jobs)
    tmp = Path(tempfile.mkdtemp(prefix="edgeproof-fuzzrun-"))
    rounds = 0
    while todo:
        rounds += 1
        jf, rf = tmp / f"jobs{rounds}.json", tmp / f"res{rounds}.jsonl"
        out, err = tmp / f"out{rounds}.txt", tmp / f"err{rounds}.txt"
        jf.write_text(json.dumps([j.__dict__ for j in todo]))
        with open(out, "wb") as fo, open(err, "wb") as fe:
            proc = subprocess.Popen([sys.executable, __file__, "worker", str(jf), str(rf)], stdout=fo, stderr=fe,
                                    env={**os.environ, **(env or {})})
            try:
                rc = proc.wait(timeout=timeout_s)
                hung = False
            except subprocess.TimeoutExpired:
                proc.kill()
                rc, hung = proc.wait(), True
        started = None
        for line in rf.read_text().splitlines() if rf.exists() else []:
            rec = json.loads(line)
            if "start" in rec:
                started = rec["start"]
            else:
                results[rec["id"]] = rec
                started = None
        by_id = {j.id: j for j in todo}
        if started is not None:  # the worker died (or hung) inside this variant
            why = f"worker {'hung (killed after timeout)' if hung else f'died with exit code {rc}'}"
            results[started] = {"id": started, "outcome": "crash", "detail": why + "; repro: "
                                + repro_line(by_id[started]), "s": None}
        elif rc != 0 or hung:
            tail = err.read_text(errors="replace")[-300:]
            raise RuntimeError(f"fuzz worker failed outside a variant (rc={rc}): {tail}")
        todo = [j for j in todo if j.id not in results]
    return results


def make_jobs(source: Path, backend: str, seeds: range, label: str) -> list[Job]:
    data = source.read_bytes()
    return [Job(f"{label}:{backend}:{s}:{mutate(data, s)[0]}", str(source), backend, s) for s in seeds]


if __name__ == "__main__":
    if sys.argv[1] == "worker":
        worker(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "repro":  # python tests/_model_fuzz.py repro SEED_MODEL BACKEND SEED
        src, backend, seed = Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
        kind, variant = mutate(src.read_bytes(), seed)
        dest = Path(tempfile.gettempdir()) / f"fuzz-{seed}-{kind}{src.suffix}"
        dest.write_bytes(variant)
        print(f"variant ({kind}) written to {dest}", flush=True)
        print(*outcome_of(dest, backend))
