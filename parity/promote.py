"""`parity --fix --promote` / `convert --auto-fix`: a passing fix replaces the artifact under its format's name.

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


def promote(fixed_path: Path, fmt_name: str, artifacts_dir: Path, variant: str, recipe: dict) -> dict:
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
        backup = dest.with_name(f"{dest.name}.replaced-{stamp}")
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
        entry.options = {**recipe, "promoted": {"by": "edgeproof parity --fix --promote", "variant": variant,
                                                "replaced_file": backup.name if backup.exists() else None,
                                                "at": stamp}}
        entry.notes = [*entry.notes, f"replaced by the passing fix '{variant}'; the earlier file is {backup.name}"]
        manifest.put(entry)
        manifest.write()
    return {"path": str(dest), "replaced": str(backup) if backup.exists() else None, "sha256": sha,
            "variant": variant}


def promote_passing(report, artifacts_dir: Path, rerun) -> list[dict]:
    """Promote every triaged artifact whose last fix passed, then judge the promoted file on every backend again
    (`rerun([(path, fmt)]) -> rows`), replacing the artifact's rows: the gate then judges what is in place."""
    done = []
    for t in report.triage:
        last = t.fixes[-1] if t.fixes else None
        if last is None or last.status != "pass":
            continue
        if getattr(FORMATS[t.format].recipe, "compiler", None) == "edgetpu" and not getattr(last, "edgetpu_full", True):
            log.warning("%s: not promoted: the passing fix (%s) keeps ops in float or int16, which the Edge TPU "
                        "cannot run, so the file would no longer be Edge TPU-ready; it is kept at %s", t.artifact,
                        getattr(last, "variant", "?"), last.path)
            continue
        info = promote(last.path, t.format, artifacts_dir, getattr(last, "variant", ""), getattr(last, "recipe", {}))
        new_rows = rerun([(Path(info["path"]), FORMATS[t.format])])
        at = next((i for i, r in enumerate(report.rows) if r.artifact == t.artifact), len(report.rows))
        rest = [r for r in report.rows if r.artifact != t.artifact]
        report.rows = rest[:at] + new_rows + rest[at:]
        info["artifact"] = t.artifact
        info["passes"] = all(r.status in ("pass", "unsupported", "skipped") for r in new_rows)
        done.append(info)
    return done
