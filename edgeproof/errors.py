"""Typed errors. The CLI turns each into one line on stderr and its exit code."""

from __future__ import annotations


class EdgeproofError(Exception):
    """A failure the user can act on. ``exit_code``: 2 bad input/usage, 1 failed check."""

    exit_code = 2


class UsageError(EdgeproofError):
    """Bad input: say what was received, what is valid and what to do."""

    exit_code = 2


class CheckFailed(EdgeproofError):
    """A gate failed (parity tolerance, a conversion, a delegate check)."""

    exit_code = 1


class MissingDependency(EdgeproofError):
    """An optional package is not installed; the message carries the exact pip line."""

    exit_code = 2

    def __init__(self, package: str, extra: str | None = None, what: str = "this command"):
        hint = f"pip install 'edgeproof[{extra}]'" if extra else f"pip install {package}"
        super().__init__(f"{what} needs the '{package}' package, which is not installed; install it with: {hint}")
        self.package = package
        self.extra = extra


def require(module: str, extra: str | None = None, what: str = "this command", package: str | None = None):
    """Import ``module`` or raise MissingDependency with the install hint."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised via tests with blocked imports
        raise MissingDependency(package or module.split(".")[0], extra, what) from exc


class IntegrityError(UsageError):
    """A file does not match the sha256 its manifest.json records (changed, corrupted or half-replaced)."""


class UnsupportedModel(UsageError):
    """A valid model file that this backend cannot run (e.g. a dtype its tensors cannot hold): say why, and
    which backend can."""


class InvalidModel(UsageError):
    """A model file that is not a valid TFLite/ONNX model (truncated, damaged, wrong type, absurd shapes)."""
