"""Check an output folder before the work, not after it: parity and bench used to fail on a read-only
filesystem, or on -o naming a file, only once every measurement was done."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from edgeproof.errors import UsageError


def ensure_writable_dir(path: str | Path, flag: str = "-o") -> Path:
    """Create `path` (with parents) and prove a file can be written in it; UsageError naming why not."""
    path = Path(path)
    blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        what = "is a file" if blocker == path else f"cannot be created: '{blocker}' is a file"
        raise UsageError(f"{flag} '{path}' {what}; give a folder path for the outputs")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".edgeproof-write-check.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UsageError(f"{flag} '{path}': cannot write there ({exc.strerror or type(exc).__name__}); give a "
                         "writable folder") from None
    return path
