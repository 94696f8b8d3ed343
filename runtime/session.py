"""`run_session`: `edgeproof run` as a library call. Load the model from its LoadSpec, run it over a source,
hand every result to the sinks in input order, report progress, close everything, return the Summary.

    from edgeproof.runtime import LoadSpec, run_session

    summary = run_session(LoadSpec("model.onnx"), "photos/", sinks=[lambda r: print(r.name, r.topk[0])])

The per-image work is runtime.per_image.Session, shared by the local pipeline and each Ray actor
(edgeproof.scaleout): the same skip reasons and the same scores whichever engine ran an input. An engine
other than the local one is passed in (`engine=`), so the runtime never imports it. `edgeproof run` is one caller: it parses flags
into a LoadSpec and RunOptions, adds its printer (and --save/--show sinks), and maps the Summary to an
exit code.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeproof.errors import UsageError
from edgeproof.runtime.pipeline import Result, Summary
from edgeproof.runtime.sources import FileSource, Source
from edgeproof.runtime.spec import LoadSpec

if TYPE_CHECKING:  # pragma: no cover (the protocols are for type checkers: a one-shot run never builds them)
    from typing import Protocol

    from edgeproof.progress import Progress, ProgressCallback
    from edgeproof.runtime.watchdog import Watchdog

    class Sink(Protocol):
        """Where results go. `add` gets each Result in input order (returning False stops the run);
        `start(model)` and `close()` are optional. `wants_frames`: the original BGR frame rides on each Result."""

        def add(self, result: Result) -> bool | None: ...

    class Engine(Protocol):
        """Schedules the per-image work elsewhere (edgeproof.scaleout's Ray engine): the model was checked on this
        side; `run` returns the Summary and the engine's own figures (Summary.engine)."""

        def run(self, spec: LoadSpec, source: FileSource, on_result: Callable[[Result], bool],
                options: RunOptions) -> tuple[Summary, dict[str, Any]]: ...


log = logging.getLogger(__name__)
EXIT_INFER_TIMEOUT = 2  # the process's exit status when an inference call outlives RunOptions.infer_timeout


@dataclass(frozen=True)
class RunOptions:
    """How to run (the LoadSpec says what to load). Invalid values raise UsageError here, once."""

    batch: int = 1  # images per inference call
    top_k: int = 5  # labels per result
    limit: int | None = None  # stop after this many results
    infer_timeout: float = 0.0  # seconds one inference call may take; 0 = no limit (see Session)

    def __post_init__(self) -> None:
        for flag, val in (("--top-k", self.top_k), ("--batch", self.batch), ("--limit", self.limit)):
            if val is not None and (isinstance(val, bool) or not isinstance(val, int)):
                raise UsageError(f"{flag} takes a whole number >= 1; got {val!r}")
            if val is not None and val < 1:
                raise UsageError(f"{flag} must be >= 1; got {val}")
        t = self.infer_timeout
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not (t >= 0 and math.isfinite(t)):  # also NaN
            raise UsageError(f"--infer-timeout must be a number of seconds >= 0 (0 = no limit); got {t!r}")


def exit_on_timeout(model_path: Path | str) -> Callable[[str, float], None]:
    """The default reaction to an inference call that outlives its limit: a native call cannot be interrupted,
    so the process ends (status EXIT_INFER_TIMEOUT) after one error record naming the model and the input."""

    def on_timeout(what: str, limit: float) -> None:
        log.error("%s: inference on %s did not finish within %g s; ending the process", Path(model_path).name,
                  what, limit)
        logging.shutdown()
        os._exit(EXIT_INFER_TIMEOUT)

    return on_timeout


def _progress(on_progress: ProgressCallback | None) -> contextlib.AbstractContextManager[Progress | None]:
    """A Progress reporting to `on_progress`, or None where nobody listens (edgeproof.progress is not imported)."""
    if on_progress is None:
        return contextlib.nullcontext()
    from edgeproof.progress import Progress

    return Progress(on_progress)


def make_watchdog(seconds: float, on_timeout: Callable[[str, float], None]) -> Watchdog | None:
    if not seconds:
        return None
    from edgeproof.runtime.watchdog import Watchdog

    return Watchdog(seconds, on_timeout)


def run_session(spec: LoadSpec | str | Path, source: Source | str | Path,
                sinks: Sequence[Sink | Callable[[Result], Any]] = (), on_progress: ProgressCallback | None = None,
                *, options: RunOptions | None = None, on_timeout: Callable[[str, float], None] | None = None,
                engine: Engine | None = None, max_pixels: int | None = None) -> Summary:
    """Classify every input of `source` with the model of `spec`; returns the Summary (Summary.model names
    the model, backend and placement; Summary.engine the engine's figures when `engine` ran it).

    source: an open Source, or what `open_source` takes (image, folder, glob, list file, video, camera
    index, URL, 'picam'; max_pixels applies). sinks: Sink objects or plain callables, called in input order.
    on_progress: ProgressEvents (one task, advanced per result). on_timeout: see exit_on_timeout.
    The source is closed, and every sink and the model, however the run ends; Ctrl-C / SIGTERM end it
    with Summary.interrupted.
    """
    spec = spec if isinstance(spec, LoadSpec) else LoadSpec(spec)
    options = options or RunOptions()
    sinks = [s if hasattr(s, "add") else _CallableSink(s) for s in sinks]
    if isinstance(source, (str, Path)):  # a Path is the same source as its string
        from edgeproof.runtime.sources import open_source

        source = open_source(str(source), max_pixels=max_pixels)
    elif not (hasattr(source, "close") and hasattr(source, "spec")):
        raise UsageError(f"source takes an open Source or what 'edgeproof run' takes (a path, folder, glob, "
                         f"camera index as a string, URL or 'picam'); got {type(source).__name__} {source!r}")
    try:
        from edgeproof.runtime.model import load

        model = load(spec)
    except BaseException:
        source.close()
        _close_all(sinks)
        raise
    watchdog, source_handed, model_open = None, False, True
    try:
        for s in sinks:
            if hasattr(s, "start"):
                s.start(model)
        with _progress(on_progress) as progress:
            task = 0 if progress is None else progress.add_task(
                f"classifying {source.spec}", total=len(source) if isinstance(source, FileSource) else None)

            def on_result(r: Result) -> bool:
                go = True
                for s in sinks:
                    go = s.add(r) is not False and go
                if progress is not None:
                    progress.advance(task)
                return go

            if engine is not None:
                model.close()  # checked here; each worker of the engine loads its own copy
                model_open = False
                summary, figures = engine.run(spec, source, on_result, options)
                summary.engine = figures
            else:
                from edgeproof.runtime.pipeline import run_pipeline

                watchdog = make_watchdog(options.infer_timeout, on_timeout or exit_on_timeout(model.path))
                source_handed = True  # run_pipeline releases it (from its reader thread if a read is stuck)
                summary = run_pipeline(model, source, on_result, batch=options.batch, top_k=options.top_k,
                                       keep_frames=any(getattr(s, "wants_frames", False) for s in sinks),
                                       limit=options.limit, watchdog=watchdog)
    finally:
        if watchdog is not None:
            watchdog.close()
        try:
            _close_all(sinks)
        finally:
            if model_open:
                model.close()
            if not source_handed:
                source.close()
    summary.model = {"path": str(model.path), "format": model.format, "backend": model.backend_name,
                     "placement": model.placement}
    return summary


class _CallableSink:
    def __init__(self, fn: Callable[[Result], Any]) -> None:
        self.fn = fn

    def add(self, result: Result) -> bool | None:
        return False if self.fn(result) is False else None


def _close_all(sinks: Sequence[Any]) -> None:
    """Close every sink, even when one fails to (its error is raised after the others are closed)."""
    first: BaseException | None = None
    for s in sinks:
        close = getattr(s, "close", None)
        if close is None:
            continue
        try:
            close()
        except BaseException as exc:  # noqa: BLE001 - re-raised below, once every sink had its turn
            first = first or exc
    if first is not None:
        raise first
