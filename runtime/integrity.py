"""The manifest check: a model beside a manifest.json must still be the file convert wrote.

`edgeproof convert` records each artifact's sha256 in OUT/manifest.json. Before a model is handed
to an interpreter, `verify_manifest` re-hashes it and refuses a mismatch (edited, corrupted,
half-replaced). The manifest is read defensively: no manifest, an unreadable one, no entry for the
file, an entry without sha256 or one whose conversion failed -> nothing to check.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from edgeproof.errors import IntegrityError

MANIFEST_FILE = "manifest.json"  # the name convert.manifest writes (kept TF-free here)
_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (constant memory for any model size)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def manifest_entry(path: str | Path) -> tuple[dict[str, Any] | None, str | None]:
    """(the manifest entry recorded for `path`'s file name, or None; a note when the manifest is unusable)."""
    path = Path(path)
    mpath = path.parent / MANIFEST_FILE
    try:
        text = mpath.read_bytes()
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"cannot read {mpath} ({exc.strerror or type(exc).__name__}); sha256 not verified"
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        return None, f"{mpath} is not valid JSON; sha256 of '{path.name}' not verified"
    arts = data.get("artifacts") if isinstance(data, dict) else None
    if not isinstance(arts, dict):
        return None, None
    for entry in arts.values():
        if isinstance(entry, dict) and entry.get("path") == path.name:
            return entry, None
    return None, None


def expected_sha256(path: str | Path) -> tuple[str | None, str | None]:
    """(the sha256 the manifest records for `path`, or None when there is nothing to check; a note)."""
    entry, note = manifest_entry(path)
    if entry is None:
        return None, note
    sha = entry.get("sha256")
    if entry.get("status", "ok") != "ok" or not isinstance(sha, str) or len(sha) != 64:
        return None, None
    return sha.lower(), None


def verify_manifest(path: str | Path) -> str | None:
    """Raise IntegrityError when `path` does not match its manifest's sha256; the verified sha, or None."""
    path = Path(path)
    want, note = expected_sha256(path)
    if note:
        from edgeproof.cli.console import warn

        warn(note)
    if want is None:
        return None
    got = sha256_file(path)
    if got != want:
        raise IntegrityError(
            f"'{path}' does not match its manifest: sha256 {got[:12]}... but {path.parent / MANIFEST_FILE} "
            f"records {want[:12]}... (the file was changed, corrupted or half-copied); re-run 'edgeproof convert' "
            "to rebuild it, or pass --no-verify to load it anyway")
    return got
