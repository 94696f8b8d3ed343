"""Device profiles: one TOML file per target in this folder, loaded with tomllib and validated.

A profile says which artifact to ship to a device, which backend runs it, which accelerator
(LiteRT delegate library, ONNX Runtime execution providers, or OpenVINO device) to ask for, how
many threads, and how to install the runtime there. Validation is strict (unknown keys, wrong
types, formats or backends that are not in `edgeproof.formats` are errors) so a typo in a profile
fails the test suite instead of silently changing what runs on a device.
"""

from __future__ import annotations

import copy
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeproof.errors import UsageError
from edgeproof.formats import BACKENDS, FORMATS, backend_class

PROFILE_DIR = Path(__file__).resolve().parent
KNOWN_ARCHES = ("x86_64", "aarch64", "armv7l")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
# An install line must not pull TensorFlow onto a device: profiles install the runtime only.
_HEAVY_INSTALL_RE = re.compile(r"\btensorflow\b|edgeproof\[(?:[^\]]*,)?\s*(?:train|all)\b", re.IGNORECASE)


@dataclass
class Profile:
    """One deployment target. Field meanings are documented in docs/devices.md."""

    name: str
    description: str
    arch: list[str]
    artifacts: list[str]  # preferred format names, best first
    backend: str
    delegates: list[str] = field(default_factory=list)  # LiteRT delegate libraries (backend litert)
    # Where the backend executes, in order: ONNX Runtime EP names (backend onnxruntime), one OpenVINO
    # device name (openvino), ... Backends receive it as `providers`; each backend class validates it.
    providers: list[str] = field(default_factory=list)
    provider_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # per EP name
    threads: int | None = None  # None: the runtime's default (all cores)
    input_size_hint: int | None = None  # suggested square input side when training for this device
    install: list[str] = field(default_factory=list)  # runtime-only install lines for the device
    limits: list[str] = field(default_factory=list)  # known limits, shown by `devices show`
    source: str | None = None  # the TOML file it was read from

    @property
    def backend_class(self) -> type:
        """The runtime backend class this profile runs on (its hooks describe and check the profile)."""
        return backend_class(self.backend)

    @property
    def accelerator(self) -> str:
        """What the profile asks for beyond plain CPU, in words ('' when it is a CPU profile)."""
        return self.backend_class.profile_accelerator(self)

    @property
    def openvino_device(self) -> str | None:
        """The OpenVINO device this profile compiles for (None unless the backend is openvino)."""
        return self.backend_class.profile_facts(self).get("openvino_device")

    @property
    def required_providers(self) -> list[str]:
        """ORT EPs that must be in onnxruntime.get_available_providers() (no silent fallback)."""
        return list(self.backend_class.profile_facts(self).get("required_providers", []))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["accelerator"] = self.accelerator
        d["openvino_device"] = None
        d.update(self.backend_class.profile_facts(self))
        return d


# key -> (python types allowed, required)
_SCHEMA: dict[str, tuple[tuple[type, ...], bool]] = {
    "name": ((str,), True),
    "description": ((str,), True),
    "arch": ((list,), True),
    "artifacts": ((list,), True),
    "backend": ((str,), True),
    "delegates": ((list,), False),
    "providers": ((list,), False),
    "provider_options": ((dict,), False),
    "threads": ((int,), False),
    "input_size_hint": ((int,), False),
    "install": ((list,), True),
    "limits": ((list,), True),
}


def _err(where: str, message: str) -> UsageError:
    return UsageError(f"invalid device profile {where}: {message}")


def _str_list(where: str, key: str, value: list, allow_empty: bool = True) -> list[str]:
    if not all(isinstance(v, str) and v.strip() for v in value):
        raise _err(where, f"'{key}' must be a list of non-empty strings, got {value!r}")
    if not allow_empty and not value:
        raise _err(where, f"'{key}' must not be empty")
    if len(set(value)) != len(value):
        raise _err(where, f"'{key}' lists an entry twice: {value!r}")
    return list(value)


def validate(data: dict[str, Any], where: str = "<dict>", stem: str | None = None) -> Profile:
    """Check one parsed profile against the schema and the format/backend tables; return a Profile."""
    unknown = sorted(set(data) - set(_SCHEMA))
    if unknown:
        raise _err(where, f"unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(_SCHEMA)}")
    for key, (types, required) in _SCHEMA.items():
        if key not in data:
            if required:
                raise _err(where, f"missing required key '{key}'")
            continue
        value = data[key]
        # bool is an int subclass in Python; a TOML `threads = true` is a typo, not 1 thread.
        if isinstance(value, bool) or not isinstance(value, types):
            want = " or ".join(t.__name__ for t in types)
            raise _err(where, f"'{key}' must be {want}, got {type(value).__name__} {value!r}")

    name = data["name"]
    if not _NAME_RE.match(name):
        raise _err(where, f"name '{name}' must be lower-case letters, digits, '-' and '_'")
    if stem is not None and name != stem:
        raise _err(where, f"name '{name}' must equal the file name stem '{stem}'")
    if not data["description"].strip():
        raise _err(where, "'description' must not be empty")

    arch = _str_list(where, "arch", data["arch"], allow_empty=False)
    bad_arch = [a for a in arch if a not in KNOWN_ARCHES]
    if bad_arch:
        raise _err(where, f"unknown arch {bad_arch}; valid: {', '.join(KNOWN_ARCHES)}")

    backend = data["backend"]
    if backend not in BACKENDS:
        raise _err(where, f"backend '{backend}' is not one of {', '.join(BACKENDS)}")

    artifacts = _str_list(where, "artifacts", data["artifacts"], allow_empty=False)
    for a in artifacts:
        if a not in FORMATS:
            raise _err(where, f"artifact '{a}' is not a format; valid: {', '.join(FORMATS)}")
        if backend not in FORMATS[a].backends:
            raise _err(where, f"backend '{backend}' cannot load artifact '{a}' "
                              f"(it loads with: {', '.join(FORMATS[a].backends)})")

    delegates = _str_list(where, "delegates", data.get("delegates", []))
    providers = _str_list(where, "providers", data.get("providers", []))
    provider_options = data.get("provider_options", {})
    why = backend_class(backend).check_profile(delegates, providers, provider_options)
    if why:
        raise _err(where, why)
    for ep, opts in provider_options.items():
        if ep not in providers:
            raise _err(where, f"provider_options for '{ep}', which is not in providers {providers}")
        if not isinstance(opts, dict) or not all(isinstance(v, (str, int, float, bool)) for v in opts.values()):
            raise _err(where, f"provider_options.{ep} must be a table of scalar values, got {opts!r}")

    threads = data.get("threads")
    if threads is not None and threads < 1:
        raise _err(where, f"threads must be >= 1 (omit it for the runtime default), got {threads}")
    size = data.get("input_size_hint")
    if size is not None and not 16 <= size <= 1024:
        raise _err(where, f"input_size_hint must be between 16 and 1024 pixels, got {size}")

    install = _str_list(where, "install", data["install"], allow_empty=False)
    heavy = [line for line in install if _HEAVY_INSTALL_RE.search(line)]
    if heavy:
        raise _err(where, f"install lines must install the runtime only (no TensorFlow), got {heavy}")
    commented = [line for line in install if re.search(r"\s#", line)]
    if commented:
        raise _err(where, f"install lines are joined with '; ' into error messages, so a '# comment' would "
                          f"swallow the lines after it; put notes in 'limits': {commented}")
    limits = _str_list(where, "limits", data["limits"])

    return Profile(
        name=name, description=data["description"].strip(), arch=arch, artifacts=artifacts,
        backend=backend, delegates=delegates, providers=providers,
        provider_options=copy.deepcopy(provider_options), threads=threads,
        input_size_hint=size, install=install, limits=limits, source=where,
    )


def _toml_loads(text: str) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError:
            from edgeproof.errors import MissingDependency

            raise MissingDependency("tomli", None, "reading device profiles on Python 3.10") from None
    return tomllib.loads(text)


def load_profile_file(path: str | Path) -> Profile:
    path = Path(path)
    from edgeproof import user_files

    try:
        data = _toml_loads(user_files.read_text(path, user_files.PROFILE))
    except ValueError as exc:  # tomllib.TOMLDecodeError is a ValueError
        raise UsageError(f"device profile '{path}' is not valid TOML: {exc}") from None
    return validate(data, where=str(path), stem=path.stem)


def load_all(directory: str | Path = PROFILE_DIR) -> dict[str, Profile]:
    """Every *.toml profile in ``directory``, validated, keyed by name (sorted)."""
    files = sorted(Path(directory).glob("*.toml"))
    profiles = [load_profile_file(f) for f in files]
    return {p.name: p for p in sorted(profiles, key=lambda p: p.name)}
