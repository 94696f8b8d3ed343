"""`LoadSpec`: the one specification of "load this model", checked once at the library boundary.

`LoadSpec(path, ...)` refuses bad values when it is built (UsageError, one line, the CLI's flag names), so
the CLI builds one before it opens a camera; `load(path, **kwargs)` builds one from its keyword arguments.
It is frozen and picklable: `run`, `parity`, `bench`, `serve` and the Ray engine build one and pass it on
(to every worker, every Ray actor), and nothing downstream checks its values again. What depends on the
file (which backend, whether that backend takes delegates or providers, whether --size fits the model) is
checked by `load()` once it has opened the file.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edgeproof.errors import UsageError

OVERRIDE_KEYS = ("size", "mean", "std", "scale", "bgr", "labels", "channels")
MAX_THREADS = 1024  # far beyond any edge device; a typo like 10000 would make the runtime spawn them all
MAX_SIDE = 16384  # --size height/width (as runtime.model_check.MAX_SIDE)


def _number_list(flag: str, values: Any) -> tuple[float, ...]:
    """1 number (every channel) or one per channel; whether the count fits the model's channels is checked by
    load() (contract.Preprocess) once it knows them."""
    from edgeproof.contract import MAX_CHANNELS

    try:
        vals = [float(v) for v in (values if isinstance(values, (list, tuple)) else [values])]
    except (TypeError, ValueError):
        raise UsageError(f"{flag} takes 1 number or one per channel (a,b,c); got {values!r}") from None
    if len(vals) == 1:
        vals *= 3  # every channel alike: contract.Preprocess fits such a list to any channel count
    if not 1 <= len(vals) <= MAX_CHANNELS:
        raise UsageError(f"{flag} takes 1 number or one per channel (a,b,c); got {len(vals)}")
    if not all(math.isfinite(v) for v in vals):
        raise UsageError(f"{flag} {','.join(f'{v:g}' for v in vals)} is not finite; give ordinary numbers")
    return tuple(vals)


def _names(flag: str, values: Any) -> tuple[str, ...] | None:
    if values is None:
        return None
    items = [values] if isinstance(values, str) else list(values)
    if not all(isinstance(v, str) and v.strip() for v in items):
        raise UsageError(f"{flag} takes names (non-empty strings); got {items!r}")
    return tuple(items)


def normalize_overrides(overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """Flags that beat the file's metadata, checked: size (h, w), mean/std (1 or one finite float per channel,
    std != 0), scale (finite), bgr (bool), labels (a list of names or a labels file path), channels (the model
    input's channel count, 1..contract.MAX_CHANNELS)."""
    ov = {k: v for k, v in dict(overrides or {}).items() if v is not None}
    unknown = set(ov) - set(OVERRIDE_KEYS)
    if unknown:
        raise UsageError(f"unknown override(s) {sorted(unknown)}; valid: {', '.join(OVERRIDE_KEYS)}")
    if "size" in ov:
        try:
            h, w = (int(v) for v in ov["size"])
        except (TypeError, ValueError):
            raise UsageError(f"--size takes HxW, e.g. 224x224; got {ov['size']!r}") from None
        if not (0 < h <= MAX_SIDE and 0 < w <= MAX_SIDE):
            raise UsageError(f"--size {h}x{w} is not valid; height and width must be 1..{MAX_SIDE}")
        ov["size"] = (h, w)
    for key in ("mean", "std"):
        if key in ov:
            ov[key] = _number_list(f"--{key}", ov[key])
    if "std" in ov and any(v == 0 for v in ov["std"]):
        raise UsageError(f"--std '{','.join(f'{v:g}' for v in ov['std'])}' contains 0; every std value must be "
                         "non-zero")
    if "scale" in ov:
        try:
            ov["scale"] = float(ov["scale"])
        except (TypeError, ValueError):
            raise UsageError(f"--scale takes a number, e.g. 0.00392; got {ov['scale']!r}") from None
        if not math.isfinite(ov["scale"]):
            raise UsageError(f"--scale {ov['scale']:g} is not finite; give an ordinary number, e.g. 0.00392")
    if "bgr" in ov:
        ov["bgr"] = bool(ov["bgr"])
    if "channels" in ov:
        from edgeproof.contract import MAX_CHANNELS

        c = ov["channels"]
        if isinstance(c, bool) or not isinstance(c, int) or not 1 <= c <= MAX_CHANNELS:
            raise UsageError(f"--channels takes the model input's channel count, 1..{MAX_CHANNELS} (1 gray, 3 color, "
                             f"4 color + alpha); got {c!r}")
    if "labels" in ov and not isinstance(ov["labels"], (str, Path)):
        ov["labels"] = [str(v) for v in ov["labels"]]
    return ov


@dataclass(frozen=True)
class LoadSpec:
    """Which model to open and how. Invalid values raise UsageError here, once.

    The integrity policy is `verify`: True (the default) refuses a file whose sha256 differs from its
    manifest.json entry before any interpreter reads it; False skips that check (--no-verify).
    """

    path: Path | str  # always a Path once built. The .tflite / .onnx file (its existence is checked by load(), after the source is opened)
    backend: str | None = None  # a name from edgeproof.formats.BACKENDS; None: from the format/device
    threads: int | None = None  # CPU threads for the runtime; None: the device profile's or the runtime's
    device: str | None = None  # a device profile name or .toml path
    delegates: tuple[str, ...] | None = None  # TFLite delegate libraries (None: the device profile's)
    providers: tuple[str, ...] | None = None  # EPs / device / accelerators (None: the device profile's)
    allow_fallback: bool = False  # a failed accelerator warns loudly and runs on the CPU instead of failing
    overrides: Mapping[str, Any] = field(default_factory=dict)  # see normalize_overrides
    verify: bool = True  # refuse a file whose sha256 differs from its manifest.json entry
    trust_model: bool = False  # --trust-model: run a model whose ops reach files, Python or the network

    def __post_init__(self) -> None:
        if isinstance(self.path, bool) or not isinstance(self.path, (str, Path)) or not str(self.path).strip():
            raise UsageError(f"the model path takes a .tflite or .onnx file name; got {self.path!r}")
        object.__setattr__(self, "path", Path(self.path))
        if self.backend is not None:
            from edgeproof.formats import get_backend

            get_backend(self.backend)
        t = self.threads
        if t is not None:
            if isinstance(t, bool) or not isinstance(t, int):
                raise UsageError(f"--threads takes a whole number >= 1; got {t!r}")
            if t < 1:
                raise UsageError(f"--threads must be >= 1; got {t}")
            if t > MAX_THREADS:
                import os

                raise UsageError(f"--threads must be at most {MAX_THREADS} (this machine has {os.cpu_count() or 1} "
                                 f"core(s); more threads than cores only adds contention); got {t}")
        if self.device is not None and (not isinstance(self.device, str) or not self.device.strip()):
            raise UsageError(f"--device takes a profile name (see 'edgeproof devices list'); got {self.device!r}")
        object.__setattr__(self, "delegates", _names("--delegate", self.delegates))
        object.__setattr__(self, "providers", _names("--provider", self.providers))
        object.__setattr__(self, "overrides", normalize_overrides(self.overrides))
        object.__setattr__(self, "allow_fallback", bool(self.allow_fallback))
        object.__setattr__(self, "verify", bool(self.verify))
        object.__setattr__(self, "trust_model", bool(self.trust_model))

    def check_backend(self, backend_cls: type) -> None:
        """The caller's delegates/providers must be ones the chosen backend takes (never silently ignored)."""
        why = backend_cls.check_options(list(self.delegates or []), list(self.providers or []))
        if why:
            raise UsageError(f"'{self.path.name}' runs on backend '{backend_cls.name}': {why}")

    def with_path(self, path: str | Path) -> LoadSpec:
        """The same options for another file (each artifact of a run folder, each Ray actor's copy)."""
        return replace(self, path=path)
