"""Terminal helpers: one rich console on stderr for humans, stdout kept clean for --json.

The library only logs (logging.getLogger("edgeproof...")) and emits progress events
(edgeproof.progress); `cli_logging` shows those records here and `progress_bars` draws the events.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from edgeproof.tables import markdown_table  # noqa: F401 - re-exported for CLI modules
from edgeproof.text import printable

if TYPE_CHECKING:  # pragma: no cover
    from edgeproof.progress import ProgressEvent

_err_console = None


def err_console():
    global _err_console
    if _err_console is None:
        from rich.console import Console

        from edgeproof.stderr_filter import TERMINAL  # stderr, even while library output goes to a log

        _err_console = Console(file=TERMINAL, highlight=False, soft_wrap=True)  # no 80-column wrapping in logs
    return _err_console


def safe(value: Any) -> str:
    """A value shown through rich: control characters escaped (edgeproof/text.py) and rich markup inert (a path
    holding '[/]' raised MarkupError, '[red]' restyled it)."""
    from rich.markup import escape

    return escape(printable(value))


def error_line(message: str) -> None:
    """One clear line: 'error: ...' on stderr."""
    from edgeproof.stderr_filter import TERMINAL

    print(f"edgeproof: error: {printable(message)}", file=TERMINAL, flush=True)


def warn(message: str, markup: bool = False) -> None:
    """A warning on stderr; `markup=True` only for messages whose variable parts the caller escaped."""
    err_console().print(f"[bold yellow]warning:[/] {printable(message) if markup else safe(message)}")


def info(message: str, markup: bool = False) -> None:
    err_console().print(printable(message) if markup else safe(message))


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()


class ConsoleHandler(logging.Handler):
    """Library log records as the CLI shows them: 'warning: ...' in yellow, info as plain lines.

    Messages are plain text (an install line like 'edgeproof[openvino]' is not rich markup)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = safe(self.format(record))
            if record.levelno >= logging.ERROR:
                err_console().print(f"[bold red]error:[/] {text}")
            elif record.levelno >= logging.WARNING:
                err_console().print(f"[bold yellow]warning:[/] {text}")
            else:
                err_console().print(text)
        except Exception:  # noqa: BLE001 - logging must never break the command
            self.handleError(record)


@contextmanager
def cli_logging(level: int = logging.INFO) -> Iterator[None]:
    """Show the library's records (INFO and up; DEBUG with --debug) on stderr while a command runs.

    Installed around one command and removed after it, so an application that calls the CLI in-process
    keeps its own logging configuration."""
    log = logging.getLogger("edgeproof")
    handler = ConsoleHandler()
    saved = log.level, log.propagate
    log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False  # shown once, here; not again by the root logger's handlers
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(saved[0])
        log.propagate = saved[1]


def _rich_progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console(),
        disable=not enabled,
        transient=False,
    )


@contextmanager
def progress(enabled: bool = True) -> Iterator[Any]:
    """A rich Progress on stderr for work the CLI drives itself (disabled: draws nothing)."""
    with _rich_progress(enabled) as prog:
        yield prog


class ProgressBars:
    """A progress callback (edgeproof.progress) that draws each start..stop scope as rich bars on stderr."""

    def __init__(self) -> None:
        self._stack: list[tuple[Any, dict[int, Any]]] = []

    def __call__(self, event: ProgressEvent) -> None:
        if event.kind == "start":
            prog = _rich_progress(True)
            prog.start()
            self._stack.append((prog, {}))
        elif event.kind == "stop":
            if self._stack:
                self._stack.pop()[0].stop()
        elif self._stack:
            prog, ids = self._stack[-1]
            if event.task not in ids:
                ids[event.task] = prog.add_task(event.description, total=event.total, completed=event.completed)
            else:
                prog.update(ids[event.task], description=event.description, completed=event.completed,
                            total=event.total)


def progress_bars(enabled: bool) -> ProgressBars | None:
    """The callback to give a library call: rich bars, or None (no bars: --no-progress, --json)."""
    return ProgressBars() if enabled else None


def table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    """Print a rich table to stdout."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title=safe(title))
    for c in columns:
        t.add_column(safe(c))
    for r in rows:
        t.add_row(*["" if v is None else safe(v) for v in r])
    Console(highlight=False).print(t)
