"""Where edgeproof keeps its caches: $EDGEPROOF_CACHE, default ~/.cache/edgeproof (datasets, trials, bench suite)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """$EDGEPROOF_CACHE/<parts...>, default ~/.cache/edgeproof/<parts...> (not created here)."""
    return Path(os.environ.get("EDGEPROOF_CACHE") or "~/.cache/edgeproof").expanduser().joinpath(*parts)
