"""`parity --fix --promote` / convert's ladder: a passing fix replaces the artifact, under ITS OWN format's name.

A variant keeps its format: a passing int16x8 fix of tflite-int8 is promoted as model.tflite-int16x8.tflite, and
the int8 file it replaces is moved aside (`<name>.replaced-<UTC time>`, its manifest entry marked "replaced" with
"replaced_by"), so no file's name says int8 where the tensors are int16. A variant with no format in the table
(ONNX with int16 activations) is never promoted.

Speed against fidelity (`--prefer`, default balanced): each passing variant's p50 is measured side by side with the
artifact it would replace (interleaved single-image runs on the same backend, SIDE_BY_SIDE_REPS each). A variant
more than SLOWER_LIMIT times slower is turned down (`rejected`, with the figures) and the ladder goes on;
"fidelity" takes it anyway, "speed" never does, and "balanced" takes it only when no variant within the limit
passes, and says so.

Kill-safe in the order convert.manifest describes: the fix is copied to a temp file beside the artifact, the
manifest entry is marked pending, the current artifact is hard-linked to `<name>.replaced-<UTC time>` (kept
beside it, not an artifact suffix, so parity and bench do not pick it up), the temp file is renamed onto the
artifact's name, and the entry is rewritten with the new sha256, size and the recipe that made it. The same
folder lock as convert: a convert writing there at the same moment makes promote refuse, not interleave.
"""

from __future__ import annotations

import logging
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

from edgeproof.errors import UsageError
from edgeproof.formats import FORMATS, artifact_filename

log = logging.getLogger(__name__)

PREFER = ("balanced", "fidelity", "speed")
SLOWER_LIMIT = 2.0
SIDE_BY_SIDE_REPS = 30


def side_by_side_ms(before: Path, after: Path, backend: str, x_of, reps: int = SIDE_BY_SIDE_REPS
                    ) -> tuple[float, float]:
    """(p50 ms of `before`, of `after`) on `backend`, single images, interleaved so that machine load hits both
    alike; x_of(preprocess) gives the images in each file's own input space."""
    import time

    import numpy as np

    from edgeproof.runtime import load

    with load(before, backend=backend, verify=False) as a, load(after, backend=backend, verify=False) as b:
        xa, xb = x_of(a.preprocess), x_of(b.preprocess)
        a.predict(xa[:1])
        b.predict(xb[:1])
        ta, tb = [], []
        for i in range(reps):
            j = i % len(xa)
            for m, x, acc in ((a, xa, ta), (b, xb, tb)) if i % 2 == 0 else ((b, xb, tb), (a, xa, ta)):
                t0 = time.perf_counter()
                m.predict(x[j:j + 1])
                acc.append(time.perf_counter() - t0)
    return float(np.median(ta) * 1000), float(np.median(tb) * 1000)


def acceptor(prefer: str, before, backend: str, x_of):
    """The ladder's `accept` for --prefer: None takes a passing variant, a string says why it is turned down."""
    if prefer not in PREFER:
        raise UsageError(f"--prefer {prefer!r} is not valid; give one of: {', '.join(PREFER)}")

    def accept(fixed) -> str | None:
        try:
            b_ms, a_ms = side_by_side_ms(before, fixed.path, backend, x_of)
        except Exception as exc:  # noqa: BLE001 - the variant already passed there; without figures, keep it
            log.warning("%s: latency not measured side by side (%s); judged on fidelity alone", fixed.path, exc)
            return None
        fixed.side_by_side_ms = {"before": round(b_ms, 4), "after": round(a_ms, 4)}
        fixed.latency_ratio = a_ms / b_ms if b_ms > 0 else None
        if prefer == "fidelity" or fixed.latency_ratio is None or fixed.latency_ratio <= SLOWER_LIMIT:
            return None
        fixed.rejected = (f"{fixed.latency_ratio:.1f}x slower than the artifact it would replace ({a_ms:.3g} vs "
                          f"{b_ms:.3g} ms p50 on {backend}, side by side; over {SLOWER_LIMIT:g}x: --prefer "
                          f"{prefer} {'never takes it' if prefer == 'speed' else 'tries the next variant'})")
        return fixed.rejected

    return accept


def choose(fixes: list, prefer: str):
    """The fix to promote (or None), and a note when it was taken although slower (balanced's fallback)."""
    taken = next((f for f in fixes if f.status == "pass" and not getattr(f, "rejected", None)), None)
    if taken is not None or prefer != "balanced":
        return taken, None
    slow = next((f for f in fixes if f.status == "pass"), None)
    if slow is None:
        return None, None
    note = (f"promoted although {slow.latency_ratio:.1f}x slower than the file it replaces: no variant within "
            f"{SLOWER_LIMIT:g}x passes (--prefer speed keeps the failing file, --prefer fidelity takes the first "
            "passing variant)")
    slow.rejected = None
    return slow, note


def promote(fixed_path: Path, fmt_name: str, artifacts_dir: Path, variant: str, recipe: dict,
            by: str = "edgeproof parity --fix --promote") -> dict:
    """Put `fixed_path` in place of the format's artifact; returns {"path", "replaced", "sha256", "variant"}."""
    from edgeproof.atomic import Flock, atomic_path, fsync_dir
    from edgeproof.convert.manifest import ArtifactResult, load_manifest
    from edgeproof.runtime.integrity import sha256_file

    fmt = FORMATS[fmt_name]
    dest = Path(artifacts_dir) / artifact_filename(fmt)
    try:
        lock = Flock(artifacts_dir, folder=True)
    except BlockingIOError:
        raise UsageError(f"an 'edgeproof convert' is writing to '{artifacts_dir}' right now; promote the fix later "
                         f"with 'edgeproof parity --fix --promote' (the fix is kept at {fixed_path})") from None
    with lock:
        manifest = load_manifest(artifacts_dir)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        backup = _free_backup(dest, stamp)
        with atomic_path(dest) as tmp:
            shutil.copyfile(fixed_path, tmp)
            sha = sha256_file(tmp)
            manifest.mark_pending(fmt.name, sha)
            if dest.exists():
                try:
                    os.link(dest, backup)
                except OSError:
                    shutil.copy2(dest, backup)
        fsync_dir(dest.parent)
        entry = manifest.get(fmt.name) or ArtifactResult(format=fmt.name, path=dest, status="ok")
        entry.path, entry.status, entry.error = dest, "ok", None
        entry.sha256, entry.bytes = sha, dest.stat().st_size
        entry.calibration_sha256 = None  # calibrated by the fix on its own batch (options say which)
        entry.options = {**recipe, "promoted": {"by": by, "variant": variant,
                                                "replaced_file": backup.name if backup.exists() else None,
                                                "at": stamp}}
        entry.notes = [*entry.notes, f"replaced by the passing fix '{variant}'; the earlier file is {backup.name}"]
        manifest.put(entry)
        manifest.write()
    return {"path": str(dest), "replaced": str(backup) if backup.exists() else None, "sha256": sha,
            "variant": variant}


def _free_backup(path: Path, stamp: str) -> Path:
    """<name>.replaced-<stamp>, or -2, -3, ... after it: two replacements within one second must not overwrite
    the first one's kept file."""
    backup, n = path.with_name(f"{path.name}.replaced-{stamp}"), 1
    while os.path.lexists(backup):
        n += 1
        backup = path.with_name(f"{path.name}.replaced-{stamp}-{n}")
    return backup


def retire(fmt_name: str, artifacts_dir: Path, replaced_by: str, why: str) -> str | None:
    """Move the format's artifact aside (<name>.replaced-<UTC time>) and mark its manifest entry "replaced": a
    variant of another format took its place. Returns the kept file's name (None when there was no file)."""
    from edgeproof.atomic import Flock, fsync_dir
    from edgeproof.convert.manifest import load_manifest

    fmt = FORMATS[fmt_name]
    src = Path(artifacts_dir) / artifact_filename(fmt)
    with Flock(artifacts_dir, folder=True):
        manifest = load_manifest(artifacts_dir)
        kept = None
        if src.exists():
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
            backup = _free_backup(src, stamp)
            os.replace(src, backup)
            fsync_dir(src.parent)
            kept = backup.name
        entry = manifest.get(fmt.name)
        if entry is not None:
            entry.status, entry.path, entry.sha256, entry.bytes = "replaced", None, None, None
            entry.error = why
            entry.options = {**entry.options, "replaced_by": replaced_by, "replaced_file": kept}
            entry.notes = [*entry.notes, why]
            manifest.put(entry)
            manifest.write()
    return kept


def promote_passing(report, artifacts_dir: Path, rerun, prefer: str = "balanced") -> list[dict]:
    """Promote, for every triaged artifact, the fix --prefer chooses (choose), under the fix's own format; then
    judge the promoted file on every backend again (`rerun([(path, fmt)]) -> rows`), replacing its rows: the gate
    then judges what is in place. An artifact replaced by another format's file keeps one row per backend,
    status "replaced", saying by what."""
    done = []
    for t in report.triage:
        fix, note = choose(t.fixes, prefer)
        if fix is None:
            continue
        real = getattr(fix, "real_format", None)
        real = t.format if real is None else real  # "": a file no format describes
        if getattr(FORMATS[t.format].recipe, "compiler", None) == "edgetpu" and not getattr(fix, "edgetpu_full", True):
            log.warning("%s: not promoted: the passing fix (%s) keeps ops in float or int16, which the Edge TPU "
                        "cannot run, so the file would no longer be Edge TPU-ready; it is kept at %s", t.artifact,
                        getattr(fix, "variant", "?"), fix.path)
            continue
        if not real:
            log.warning("%s: not promoted: the passing fix (%s) has int16 activations, which no format in the table "
                        "describes; it is kept at %s", t.artifact, getattr(fix, "variant", "?"), fix.path)
            continue
        info = promote(fix.path, real, artifacts_dir, getattr(fix, "variant", ""), getattr(fix, "recipe", {}))
        new_rows = rerun([(Path(info["path"]), FORMATS[real])])
        if real == t.format:
            at = next((i for i, r in enumerate(report.rows) if r.artifact == t.artifact), len(report.rows))
            rest = [r for r in report.rows if r.artifact != t.artifact]
            report.rows = rest[:at] + new_rows + rest[at:]
        else:
            why = (f"replaced by {Path(info['path']).name} (fix '{getattr(fix, 'variant', '')}', a {real} file: "
                   f"{_speed(fix)})")
            info["replaced"] = retire(t.format, artifacts_dir, real, why)
            for r in report.rows:
                if r.artifact == t.artifact:
                    r.status, r.reason, r.failures = "replaced", why, []
            rows = [r for r in report.rows if r.artifact != Path(info["path"]).name]  # the old file of that format
            at = max((i + 1 for i, r in enumerate(rows) if r.artifact == t.artifact), default=len(rows))
            report.rows = rows[:at] + new_rows + rows[at:]
        c = getattr(fix, "comparison", None)
        if c is not None:  # its fidelity, next to its speed
            info.update(agreement=f"{c.task.top1_agree_count}/{c.task.n}", snr_db=round(min(c.tensor.snr_db, 999.0), 1))
        info.update(artifact=t.artifact, format=real, replaces=t.format, prefer=prefer, note=note,
                    latency_ratio=getattr(fix, "latency_ratio", None), side_by_side_ms=getattr(fix, "side_by_side_ms", None),
                    passes=all(r.status in ("pass", "unsupported", "skipped") for r in new_rows))
        if note:
            log.warning("%s: %s", t.artifact, note)
        done.append(info)
    return done


def _speed(fix) -> str:
    sbs = getattr(fix, "side_by_side_ms", None)
    if not sbs:
        return "latency not measured"
    return f"p50 {sbs['after']:.3g} ms vs {sbs['before']:.3g} ms, {sbs['after'] / max(sbs['before'], 1e-9):.1f}x"
