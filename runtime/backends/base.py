"""The small contract every runtime backend implements (NumPy in, NumPy out), and its hooks.

A backend knows nothing about images: `run(x)` takes a batch already in the model's own input
dtype and layout (Model.predict quantizes and transposes) and returns the raw first output.
Heavy imports (the runtime package) happen in `load()`, never at module import.

Everything the rest of edgeproof needs to know about one backend is a hook on its class, so
`load`, `inspect`, `bench` and `devices` loop over the registry and never test a backend's name:
  takes / check_profile / profile_options   what a device profile (or caller) may hand it, and its checks
  profile_accelerator / profile_facts       how a profile's accelerator reads, for `devices`
  host_checks                               can this host run a profile with it
  bare_loop                                 the hand-written loop `bench` compares against
  inspect_load                              the trial load `inspect` reports
  placement (after load)                    where the model's ops run
  time_inside (after load)                  latency the runtime measures itself (the browser page)
"""

from __future__ import annotations

import copy
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgeproof.contract import ArtifactMeta, TensorSpec

PROFILE_FIELDS = ("delegates", "providers", "provider_options")


log = logging.getLogger(__name__)


def warn(message: str) -> None:
    """A loud line for the user (fallbacks, slow paths): a WARNING record the CLI shows as 'warning: ...'."""
    log.warning(message)


class Backend(ABC):
    """One runtime for one file family.

    Constructor arguments are the options `edgeproof.runtime.load` passes to every backend;
    a backend ignores what does not apply to it (e.g. `providers` for LiteRT).

    After `load()`:
      input_spec / output_spec  TensorSpec of the first input/output (shape with None for dynamic
                                dims, dtype name, quant scale/zero point for int8/uint8);
      batch_ok                  run() accepts any batch size N >= 1 (else Model loops one by one);
      placement                 dict(accelerator=int, cpu=int, total=int, where=str, ...) or None;
      degraded                  what the runtime could not read or do and worked around (degrade()):
                                load() adds it to the placement as "degraded", so run, bench and inspect show it.
    """

    name = "base"
    # Which of PROFILE_FIELDS it takes (from a device profile, or from the caller's delegates/providers).
    takes: frozenset[str] = frozenset()
    providers_label = "providers"  # what `devices show` calls its providers
    cpu_label = "CPU"  # a profile of it that asks for no accelerator

    def __init__(
        self,
        path: str | Path,
        threads: int | None = None,
        delegates: list[str] | None = None,
        providers: list[str] | None = None,
        allow_fallback: bool = False,
        install_hint: str | None = None,
        provider_options: dict[str, dict[str, Any]] | None = None,
        verified_sha256: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.threads = threads
        self.delegates = list(delegates or [])
        self.providers = list(providers or [])
        self.allow_fallback = allow_fallback
        self.install_hint = install_hint
        self.provider_options = dict(provider_options or {})  # per provider name (ONNX Runtime EP options)
        self.input_spec: TensorSpec | None = None
        self.output_spec: TensorSpec | None = None
        self.batch_ok = False
        self.placement: dict[str, Any] | None = None
        self.failed_accelerators: list[str] = []  # delegates/EPs skipped under allow_fallback
        self.degraded: list[str] = []  # see degrade()
        # manifest.json vouches for these bytes (load() checked it): backends may skip a guarded trial
        self.verified_sha256 = verified_sha256

    def degrade(self, what: str, exc: BaseException) -> None:
        """A fact the runtime could not read, replaced by a stated default: one warning with the cause, and a
        line in placement["degraded"] (never a silent default)."""
        cause = " ".join(str(exc).split())[:200] or "no message"
        line = f"{what} ({type(exc).__name__}: {cause})"
        warn(f"{self.path.name}: {self.name}: {line}")
        self.degraded.append(line)

    # ---- device profiles and callers' options ------------------------------------------------
    @classmethod
    def check_profile(cls, delegates: list[str], providers: list[str],
                      provider_options: dict[str, Any]) -> str | None:
        """Why a profile's (or caller's) accelerator fields do not fit this backend; None when they do."""
        if delegates and "delegates" not in cls.takes:
            return (f"delegates {', '.join(delegates)} are LiteRT delegate libraries and backend '{cls.name}' takes "
                    f"none; leave them out, or run on a backend that takes them ({_takers('delegates')})")
        if providers and "providers" not in cls.takes:
            return (f"providers {', '.join(providers)} (ONNX Runtime execution providers, an OpenVINO device or "
                    f"LiteRT accelerators) do not apply to backend '{cls.name}', which takes none; leave them out, "
                    f"or run on a backend that takes them ({_takers('providers')})")
        return None

    @classmethod
    def check_options(cls, delegates: list[str], providers: list[str]) -> str | None:
        """Why a caller's delegates/providers do not fit this backend (load() refuses them); None when they do."""
        return cls.check_profile(delegates, providers, {})

    @classmethod
    def profile_options(cls, profile: Any) -> dict[str, Any]:
        """The constructor options this backend takes from a device profile."""
        return {f: copy.deepcopy(getattr(profile, f, None) or ([] if f != "provider_options" else {}))
                for f in PROFILE_FIELDS if f in cls.takes}

    @classmethod
    def profile_accelerator(cls, profile: Any) -> str:
        """What the profile asks for beyond plain CPU, in words ('' for a CPU profile)."""
        return ""

    @classmethod
    def profile_facts(cls, profile: Any) -> dict[str, Any]:
        """Backend-specific facts a profile's to_dict() shows (e.g. the OpenVINO device)."""
        return {}

    @classmethod
    def host_checks(cls, profile: Any, facts: Any, loader: Any = None) -> list[tuple[bool, str]]:
        """(ok, message) per requirement of `profile` this backend has on the host (`facts`: HostFacts)."""
        return []

    # ---- bench and inspect -----------------------------------------------------------------
    @classmethod
    def bare_loop(cls, path: str | Path, threads: int | None, x: np.ndarray, model: Any = None) -> Any:
        """The bench baseline (runtime.bench.baselines.Baseline): the library's own minimal loop on `x`
        (NHWC float32), or None when there is none. `model`: the edgeproof Model of the same file."""
        return None

    @classmethod
    def inspect_load(cls, path: Path, report: dict[str, Any]) -> None:
        """Load `path` the way `inspect` tries each runtime (raises on failure). Default: a full load."""
        vouched = report.get("sha256") if (report.get("integrity") or {}).get("matches") else None
        be = cls(path, verified_sha256=vouched)
        try:
            be.load()
        finally:
            be.close()

    def _accelerator_unavailable(self, kind: str, names: list[str], message: str,
                                 then: str = "RUNNING ON THE CPU INSTEAD") -> None:
        """Never a silent CPU fallback: raise, or (allow_fallback) record `names` and warn loudly.

        `kind` heads the warning ("DELEGATE", "EXECUTION PROVIDER", "DEVICE"); the caller then goes on
        without the accelerator and its placement says FALLBACK.
        """
        from edgeproof.errors import EdgeproofError

        if not self.allow_fallback:
            raise EdgeproofError(message + " (or pass --allow-fallback to run on the CPU)")
        self.failed_accelerators.extend(names)
        warn(f"{kind} FALLBACK: {message}. {then} (--allow-fallback).")

    @abstractmethod
    def load(self) -> None:
        """Import the runtime, open the file, fill input_spec/output_spec/batch_ok/placement."""

    @abstractmethod
    def run(self, x: np.ndarray) -> np.ndarray:
        """One forward pass: x in the model's dtype/layout (N, ...) -> the raw first output (N, ...)."""

    def run_bytes(self, shape: tuple[int, ...], fill: Callable[[np.ndarray], Any]) -> np.ndarray:
        """run() on the input that `fill(buf)` writes as bytes into `buf`, a uint8 array of `shape` (int8/uint8
        inputs only). Returns the raw first output, which may be the runtime's own buffer: valid until the next
        call, so copy or consume it first. A backend that can hand out its runtime's input tensor has fill write
        there (no copy): LiteRT."""
        buf = np.empty(shape, np.uint8)
        fill(buf)
        return self.run(buf.view(self.input_spec.dtype))

    def read_meta(self) -> ArtifactMeta | None:
        """The embedded edgeproof metadata (backends with the file already open may do it cheaper)."""
        from edgeproof.runtime.metadata import read_metadata

        return read_metadata(self.path)

    def output_names(self) -> list[str]:
        """Every output's name, in order (backends that read only the first report just it)."""
        return [self.output_spec.name] if getattr(self, "output_spec", None) is not None else []

    def select_output(self, name: str) -> bool:
        """Use the output called `name` instead of the first; False when this backend cannot."""
        return False

    def time_inside(self, x: np.ndarray, warmup: int, runs: int) -> dict[str, Any] | None:
        """Per-inference latency the runtime measures itself ({"samples_ms", "timed_in", versions...}), for
        `bench`: the browser backends time each run inside the page. None (default): bench times the calls."""
        return None

    def cancel(self) -> bool:
        """Ask a run() in progress (in another thread) to stop; False when this runtime cannot be interrupted."""
        return False

    def close(self) -> None:
        """Release the runtime's resources; the backend is unusable afterwards."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"


def _takers(field: str) -> str:
    """The registered backends whose class takes `field` ('delegates' or 'providers'), for a refusal's advice."""
    from edgeproof.errors import EdgeproofError
    from edgeproof.formats import BACKENDS

    names = []
    for b in BACKENDS.values():
        try:
            if field in b.load_class().takes:
                names.append(b.name)
        except EdgeproofError:  # load_class: its module does not import here, so it is not suggested
            continue
    return "--backend " + ", ".join(names) if names else "none is installed"


class BatchUnsupported(Exception):
    """Raised by run() when the model cannot take this batch size; Model then feeds one item at a time."""
