"""The parity results table on the terminal (rich), from the report's cells (edgeproof.parity.report)."""

from __future__ import annotations

from edgeproof.parity.report import COLUMNS, row_cells


def print_table(report) -> None:
    """The results table on stdout; wide enough to stay readable when piped (CI logs)."""
    import sys

    from rich.console import Console
    from rich.table import Table

    ref = report.reference
    acc = "n/a (unlabelled)" if ref["accuracy"] is None else f"{ref['accuracy']:.1%} ({ref['correct']}/{ref['n']})"
    lat = "" if ref["latency_p50_ms"] is None else f", p50 {ref['latency_p50_ms']:.2f} ms"
    from edgeproof.cli.console import safe

    t = Table(title=safe(f"parity vs Keras on {report.images_source} — Keras top-1 {acc}{lat}"))
    for c in COLUMNS:
        t.add_column(c, no_wrap=c != "note")
    styles = {"pass": "green", "fail": "bold red", "error": "bold red", "unsupported": "yellow", "skipped": "dim"}
    for r in report.rows:
        cells = [safe(c) for c in row_cells(r)]
        cells[0] = cells[0].removeprefix("model.")
        cells[2] = f"[{styles[r.status]}]{cells[2]}[/]" if r.status in styles else cells[2]
        t.add_row(*cells)
    Console(highlight=False, width=None if sys.stdout.isatty() else 220).print(t)
