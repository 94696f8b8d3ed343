"""Device profiles (``devices/*.toml``) and host detection.

Public API (the contract other commands use):
    get_profile(name) -> Profile        unknown name: UsageError listing the valid profiles
    list_profiles() -> list[Profile]    every shipped profile, sorted by name
    detect() -> (Profile, reasons)      the best profile for this host, and why

Modules: `profiles` (the dataclass, TOML loading, schema validation) and `probe` (host probes and
the choice). The probe module is not called `detect` so that it can never shadow the `detect()`
function in this package's namespace.
"""

from __future__ import annotations

import copy
from functools import lru_cache

from edgeproof.devices.profiles import PROFILE_DIR, Profile, load_all, load_profile_file, validate
from edgeproof.errors import UsageError

__all__ = [
    "PROFILE_DIR",
    "Profile",
    "detect",
    "get_profile",
    "list_profiles",
    "load_profile_file",
    "profile_names",
    "validate",
]


@lru_cache(maxsize=1)
def _profiles() -> dict[str, Profile]:
    return load_all(PROFILE_DIR)


def profile_names() -> list[str]:
    return list(_profiles())


def list_profiles() -> list[Profile]:
    """Every shipped profile (copies: callers may change them freely)."""
    return [copy.deepcopy(p) for p in _profiles().values()]


def get_profile(name: str) -> Profile:
    """The profile called ``name``; a path to a .toml file loads a custom profile."""
    if isinstance(name, Profile):
        return copy.deepcopy(name)
    if name.endswith(".toml"):
        return load_profile_file(name)
    try:
        return copy.deepcopy(_profiles()[name])
    except KeyError:
        raise UsageError(
            f"unknown device '{name}'; valid devices: {', '.join(profile_names())} "
            "(or a path to a profile .toml; 'edgeproof devices detect' names the one for this host)"
        ) from None


def detect(facts=None) -> tuple[Profile, list[str]]:
    """The best profile for this host and the reasons. ``facts``: a HostFacts (tests fake it)."""
    from edgeproof.devices.probe import choose, host_facts

    return choose(facts if facts is not None else host_facts())
