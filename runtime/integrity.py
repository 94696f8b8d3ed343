"""The manifest check: a model beside a manifest.json must still be the file convert wrote.

`edgeproof convert` records each artifact's sha256 in OUT/manifest.json. Before a model is handed
to an interpreter, `verify_manifest` re-hashes it and refuses a mismatch (edited, corrupted,
half-replaced). The manifest is read defensively: no manifest, an unreadable one, no entry for the
file, an entry without sha256 or one whose conversion failed -> nothing to check.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path
from typing import Any

from edgeproof.errors import IntegrityError

log = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"  # the name convert.manifest writes (kept TF-free here)
MAX_MANIFEST_BYTES = 16 << 20  # convert's manifest is a few KiB
_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (constant memory for any model size)."""
    import hashlib  # here: a model without a manifest never pays for it (one-shot run)

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _candidates(path: Path) -> list[Path]:
    """The file itself, then (for a symlink) the name it was given: a link to an artifact is checked
    against the manifest beside the real file, so a symlink cannot skip verification."""
    real = Path(os.path.realpath(path))
    return [path] if real == path.absolute() else [real, path]


def read_manifest(mpath: Path) -> tuple[Any, str | None]:
    """(the parsed manifest.json at `mpath`, None); (None, None) when there is none; (None, why) when
    it is unusable: over MAX_MANIFEST_BYTES (a manifest is a few KiB), not JSON, nested absurdly deep
    (RecursionError), or not a regular file (a folder; a FIFO, whose read would block forever)."""
    try:
        if not stat.S_ISREG(mpath.stat().st_mode):
            raise OSError(0, "not a regular file")
        with open(mpath, "rb") as fh:
            text = fh.read(MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"cannot read {mpath} ({exc.strerror or type(exc).__name__})"
    if len(text) > MAX_MANIFEST_BYTES:
        return None, f"{mpath} is over {MAX_MANIFEST_BYTES >> 20} MiB, not a manifest edgeproof wrote"
    try:
        return json.loads(text), None
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None, f"{mpath} is not valid JSON"


def manifest_entry(path: str | Path) -> tuple[dict[str, Any] | None, str | None, Path]:
    """(the manifest entry recorded for `path`, or None; a note when a manifest is unusable; the manifest's path).

    An unusable manifest (see read_manifest) is a note and nothing checked, never an error of the model.
    """
    path = Path(path)
    note, first = None, None
    for cand in _candidates(path):
        mpath = cand.parent / MANIFEST_FILE
        first = first or mpath
        data, why = read_manifest(mpath)
        if why:
            note = note or (f"{why}; sha256 not verified" if why.startswith("cannot read") else
                            f"{why}; sha256 of '{cand.name}' not verified")
            continue
        arts = data.get("artifacts") if isinstance(data, dict) else None
        for entry in arts.values() if isinstance(arts, dict) else ():
            if isinstance(entry, dict) and entry.get("path") == cand.name:
                return entry, None, mpath
    return None, note, first


def _gate_failed(entry: dict) -> bool:
    """Written, but it missed convert's held-out gate (parity.escalate): its bytes are still vouched for. A failed
    conversion (no held-out verdict) vouches for nothing."""
    opts = entry.get("options")
    return entry.get("status") == "failed" and isinstance(opts, dict) and isinstance(opts.get("held_out_gate"), dict)


def expected(path: str | Path) -> tuple[str | None, str | None, Path]:
    """(the sha256 the manifest records for `path`, or None when there is nothing to check; a note; the manifest)."""
    entry, note, mpath = manifest_entry(path)
    if entry is None:
        return None, note, mpath
    sha = entry.get("sha256")
    if not (entry.get("status", "ok") == "ok" or _gate_failed(entry)) or not isinstance(sha, str) or len(sha) != 64:
        return None, None, mpath
    return sha.lower(), None, mpath


def expected_sha256(path: str | Path) -> tuple[str | None, str | None]:
    """(the sha256 the manifest records for `path`, or None when there is nothing to check; a note)."""
    return expected(path)[:2]


def verify_manifest(path: str | Path) -> str | None:
    """Raise IntegrityError when `path` does not match its manifest's sha256; the verified sha, or None."""
    path = Path(path)
    want, note, mpath = expected(path)
    if note:
        log.warning(note)
    if want is None:
        return None
    got = sha256_file(path)
    if got != want:
        raise IntegrityError(
            f"'{path}' does not match its manifest: sha256 {got[:12]}... but {mpath} "
            f"records {want[:12]}... (the file was changed, corrupted or half-copied); re-run 'edgeproof convert' "
            "to rebuild it, or pass --no-verify to load it anyway")
    return got
