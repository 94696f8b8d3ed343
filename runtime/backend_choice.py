"""Which backend runs a file: the caller's choice, a device profile's, or the format table's first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeproof.errors import UsageError
from edgeproof.formats import BACKENDS, backends_for, format_of, get_backend


def device_profile(device: str) -> Any:
    """The device profile `device` names (UsageError where edgeproof.devices is not installed)."""
    try:
        from edgeproof.devices import get_profile
    except ImportError:
        raise UsageError(f"--device {device}: device profiles (edgeproof.devices) are not available in this "
                         "install") from None
    return get_profile(device)


def choose_backend(path: Path, family: str, backend: str | None, profile: Any) -> str:
    """The backend that runs `path`: the caller's (checked against the file's family), else the device profile's
    where the format table allows it, else the format's first."""
    if backend:
        b = get_backend(backend)
        if b.family not in (family, "any"):
            raise UsageError(f"backend '{backend}' cannot run '{path.name}' ({family}); valid backends for it: "
                             f"{', '.join(backends_for(family))}")
        return b.name
    pb = getattr(profile, "backend", None) if profile is not None else None
    fmt = format_of(path)
    if pb in BACKENDS and BACKENDS[pb].family in (family, "any") and (fmt is None or pb in fmt.backends):
        return pb
    if fmt is not None:
        return fmt.backends[0]
    return backends_for(family)[0]
