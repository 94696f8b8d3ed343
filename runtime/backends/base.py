"""The small contract every runtime backend implements (NumPy in, NumPy out).

A backend knows nothing about images: `run(x)` takes a batch already in the model's own input
dtype and layout (Model.predict quantizes and transposes) and returns the raw first output.
Heavy imports (the runtime package) happen in `load()`, never at module import.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from edgeproof.contract import ArtifactMeta, TensorSpec


class Backend(ABC):
    """One runtime for one file family.

    Constructor arguments are the options `edgeproof.runtime.load` passes to every backend;
    a backend ignores what does not apply to it (e.g. `providers` for LiteRT).

    After `load()`:
      input_spec / output_spec  TensorSpec of the first input/output (shape with None for dynamic
                                dims, dtype name, quant scale/zero point for int8/uint8);
      batch_ok                  run() accepts any batch size N >= 1 (else Model loops one by one);
      placement                 dict(accelerator=int, cpu=int, total=int, where=str, ...) or None.
    """

    name = "base"

    def __init__(
        self,
        path: str | Path,
        threads: int | None = None,
        delegates: list[str] | None = None,
        providers: list[str] | None = None,
        allow_fallback: bool = False,
        install_hint: str | None = None,
        provider_options: dict[str, dict[str, Any]] | None = None,
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
        self.verified_sha256: str | None = None  # set by load() when manifest.json vouches for the file

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
        from rich.markup import escape  # install lines hold brackets ('edgeproof[openvino]') rich would eat

        from edgeproof.cli.console import warn

        warn(f"[bold red]{kind} FALLBACK[/]: {escape(message)}. {then} (--allow-fallback).", markup=True)

    @abstractmethod
    def load(self) -> None:
        """Import the runtime, open the file, fill input_spec/output_spec/batch_ok/placement."""

    @abstractmethod
    def run(self, x: np.ndarray) -> np.ndarray:
        """One forward pass: x in the model's dtype/layout (N, ...) -> the raw first output (N, ...)."""

    def read_meta(self) -> ArtifactMeta | None:
        """The embedded edgeproof metadata (backends with the file already open may do it cheaper)."""
        from edgeproof.runtime.metadata import read_metadata

        return read_metadata(self.path)

    def close(self) -> None:
        """Release the runtime's resources; the backend is unusable afterwards."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"


class BatchUnsupported(Exception):
    """Raised by run() when the model cannot take this batch size; Model then feeds one item at a time."""
