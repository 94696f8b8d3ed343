"""`parity --target NAME`: the rows `artifact [backend@NAME]`, run by the emulated target's runtime.

The target gets the host's preprocessed tensors (the same arrays the host rows ran on), so a difference
between a host row and its target row is the kernels' (x86-64 vs the board's aarch64 code paths), never the
decoder's. Each target row is judged by the same gate against the same Keras reference, and carries max|Δ|
against the host row of the same artifact and backend ('vs_host').
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeproof.parity.gate import override
from edgeproof.parity.runner import Batches, Row, error_row, failure_of, judge, plan_matrix

DEFAULT_SECONDS_PER_ROW = 120.0


def target_backends() -> tuple[str, ...]:
    """The backends a target can have: those of the runtime's wheels (never OpenVINO or litert-compiled)."""
    from edgeproof.targets.catalog import RUNTIME_WHEELS

    return tuple(b for _, bs in RUNTIME_WHEELS for b in bs)


def target_rows(sysroot, artifacts: list, batches: Batches, reference: np.ndarray, backends: list[str] | None,
                tol_flags: dict, host_rows: list[Row], progress=None, verify: bool = True,
                timeout_s: float | None = None, trust_model: bool = False) -> list[Row]:
    """One row per artifact x listed backend that the target's runtime provides, in one emulated process."""
    from edgeproof.targets.remote import Job, run_jobs

    name = sysroot.target.name
    rows: list[Row | None] = []
    jobs, where = [], []
    for p in plan_matrix(artifacts, backends):
        if p.judged_as is None or not p.listed or p.backend not in target_backends():
            continue  # the target runs each format's listed backends that its runtime wheels provide
        label = f"{p.backend}@{name}"
        if p.backend not in sysroot.backends:
            why = "; ".join(sysroot.missing.values()) or f"{p.backend} is not installed in the target"
            rows.append(Row(p.path.name, p.path, p.judged_as.name, label, "unsupported", why, p.path.stat().st_size,
                            target=name))
            continue
        try:
            x = batches.get(_preprocess_of(p.path, p.backend, verify, trust_model))
        except Exception as exc:  # noqa: BLE001 - the host cannot prepare its input: this row's error
            row = error_row(p.path, p.judged_as, label, failure_of(exc), True)
            row.target = name
            rows.append(row)
            continue
        jobs.append(Job(p.path, p.backend, x, verify, trust_model))
        where.append((len(rows), p))
        rows.append(None)
    if jobs:
        task = progress.add_task(f"parity on {name} (emulated)", total=1) if progress is not None else None
        limit = (timeout_s or DEFAULT_SECONDS_PER_ROW) * len(jobs)
        results, _probe = run_jobs(sysroot, jobs, limit)
        for (i, p), res in zip(where, results):
            label = f"{p.backend}@{name}"
            if res.probs is None:
                row = error_row(p.path, p.judged_as, label, (res.error, res.integrity), True)
            else:
                tol = override(p.judged_as.tolerance, **tol_flags)
                row = judge(p.path, p.judged_as, label, res.probs, None, reference, batches.images.labels, tol,
                            True, classes=batches.images.classes)
                _vs_host(row, p.path, p.backend, host_rows)
            row.target = name
            rows[i] = row
        if progress is not None:
            progress.advance(task)
    return [r for r in rows if r is not None]


def interleave(host_rows: list[Row], rows: list[Row]) -> list[Row]:
    """Each artifact's target rows right after its host rows (one table, the two side by side)."""
    out = []
    for i, r in enumerate(host_rows):
        out.append(r)
        if i + 1 == len(host_rows) or host_rows[i + 1].path != r.path:
            out += [t for t in rows if t.path == r.path]
    placed = {id(r) for r in out}
    return out + [t for t in rows if id(t) not in placed]


def _preprocess_of(path: Path, backend: str, verify: bool, trust_model: bool):
    """The artifact's preprocessing contract as the host's runtime reads it (metadata, or its input tensor)."""
    from edgeproof.runtime import load

    model = load(path, backend=backend, verify=verify, trust_model=trust_model)
    try:
        return model.preprocess
    finally:
        model.close()


def _vs_host(row: Row, path: Path, backend: str, host_rows: list[Row]) -> None:
    """max|Δ| of the target's probabilities against the host row of the same file and backend."""
    host = next((h for h in host_rows if h.path == path and h.backend == backend and h.probs is not None), None)
    if host is None or row.probs is None:
        return
    delta = float(np.max(np.abs(row.probs.astype(np.float64) - host.probs.astype(np.float64))))
    same_top1 = int(np.sum(row.probs.argmax(1) == host.probs.argmax(1)))
    row.vs_host = {"backend": backend, "max_abs": delta, "top1_same": same_top1, "n": len(row.probs)}
    note = f"vs host {backend}: max|Δ| {delta:.2e}" if delta else f"vs host {backend}: identical"
    if same_top1 != len(row.probs):
        note += f", top-1 differs on {len(row.probs) - same_top1}/{len(row.probs)}"
    row.reason = f"{note}; {row.reason}" if row.reason else note
