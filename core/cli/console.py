"""Terminal helpers: one rich console on stderr for humans, stdout kept clean for --json."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from edgeproof.text import printable

_err_console = None


def err_console():
    global _err_console
    if _err_console is None:
        from rich.console import Console

        from edgeproof.stderr_filter import TERMINAL  # stderr, even while library output goes to a log

        _err_console = Console(file=TERMINAL, highlight=False, soft_wrap=True)  # no 80-column wrapping in logs
    return _err_console


def safe(value: Any) -> str:
    """A value shown through rich: control characters escaped (core/text.py) and rich markup inert (a path
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


@contextmanager
def progress(enabled: bool = True) -> Iterator[Any]:
    """A rich Progress on stderr (disabled: a no-op object with the same methods)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    prog = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console(),
        disable=not enabled,
        transient=False,
    )
    with prog:
        yield prog


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


def markdown_table(columns: list[str], rows: list[list[Any]]) -> str:
    """A GitHub-flavoured markdown table; '|' inside cells and headers is escaped."""

    def cells(values) -> str:
        return "| " + " | ".join(printable(v).replace("|", "\\|") for v in values) + " |"

    return "\n".join([cells(columns), "|" + "---|" * len(columns), *(cells(r) for r in rows)])
