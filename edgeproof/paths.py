"""Where edgeproof keeps its caches: $EDGEPROOF_CACHE, else $XDG_CACHE_HOME/edgeproof, else ~/.cache/edgeproof
(datasets, trials, bench suite, emulated targets)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """The cache folder <parts...> (not created here): $EDGEPROOF_CACHE, else $XDG_CACHE_HOME/edgeproof, else
    ~/.cache/edgeproof."""
    root = os.environ.get("EDGEPROOF_CACHE") or (Path(os.environ["XDG_CACHE_HOME"]) / "edgeproof"
                                                 if os.environ.get("XDG_CACHE_HOME") else "~/.cache/edgeproof")
    return Path(root).expanduser().joinpath(*parts)
