"""The parity results table on the terminal (rich), from the report's cells (edgeproof.parity.report).

It fits the terminal (80 columns and up): the least needed columns are dropped first (DROP_ORDER); when the note
no longer fits, it moves under the table, one line per row, so it is never lost; one line names the columns
left out. `--wide` shows every column. parity.json and parity.md always keep everything.
"""

from __future__ import annotations

from edgeproof.formats import FORMATS
from edgeproof.parity.report import COLUMNS, row_cells

# Dropped first to last while the table is wider than the terminal; the rest always stays: which artifact on
# which backend, its verdict, and the figures the gate judged (every failure is printed in full below anyway).
DROP_ORDER = ("cosine", "mean|Δ|", "top-5 agree", "size", "Δacc 95% CI", "top-1 acc", "max|Δ|", "note", "p50 ms",
              "loss p")
PIPED_WIDTH = 120  # stdout is not a terminal (CI logs): the widest terminal the table is made for
WIDE_WIDTH = 400
NOTE_MIN = 30  # the note column wraps, but never narrower than this (else it goes under the table)
GAP = 3  # box.SIMPLE_HEAD: a space of padding each side and a blank rule between columns


def fit_columns(widths: dict[str, int], width: int) -> list[str]:
    """The columns that fit `width` characters (natural widths given), dropping DROP_ORDER first."""
    keep = list(widths)

    def total(cols: list[str]) -> int:
        return sum(min(widths[c], NOTE_MIN) if c == "note" else widths[c] for c in cols) + GAP * len(cols)

    for name in DROP_ORDER:
        if total(keep) <= width:
            break
        if name in keep:
            keep.remove(name)
    return keep


def short_name(artifact: str) -> str:
    """'model.tflite-int8.tflite' -> 'tflite-int8' (a file named after its format); any other name as is."""
    stem = artifact.removeprefix("model.")
    for fmt in FORMATS.values():
        if stem == f"{fmt.name}{fmt.suffix}":
            return fmt.name
    return stem


def print_table(report, wide: bool = False, width: int | None = None) -> None:
    """The results table on stdout, fitted to the terminal's width (`wide`: every column)."""
    import shutil
    import sys

    from rich import box
    from rich.console import Console
    from rich.table import Table

    from edgeproof.cli.console import safe

    ref = report.reference
    acc = "n/a (unlabelled)" if ref["accuracy"] is None else f"{ref['accuracy']:.1%} ({ref['correct']}/{ref['n']})"
    lat = "" if ref["latency_p50_ms"] is None else f", p50 {ref['latency_p50_ms']:.2f} ms"
    if width is None:
        width = WIDE_WIDTH if wide else (shutil.get_terminal_size((PIPED_WIDTH, 24)).columns
                                         if sys.stdout.isatty() else PIPED_WIDTH)
    rows = []
    for r in report.rows:
        cells = row_cells(r)
        cells[0] = cells[0].removeprefix("model.") if wide else short_name(cells[0])
        rows.append((r, [safe(c) for c in cells]))
    natural = {c: max([len(c)] + [len(cells[i]) for _, cells in rows]) for i, c in enumerate(COLUMNS)}
    keep = list(COLUMNS) if wide else fit_columns(natural, width)
    console = Console(highlight=False, width=width, soft_wrap=False)
    t = Table(title=safe(f"parity vs Keras on {report.images_source} — Keras top-1 {acc}{lat}"),
              box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for c in keep:
        t.add_column(c, no_wrap=c != "note", overflow="fold")
    styles = {"pass": "green", "fail": "bold red", "error": "bold red", "unsupported": "yellow", "skipped": "dim",
              "replaced": "cyan"}
    at = {c: i for i, c in enumerate(COLUMNS)}
    for r, cells in rows:
        status = f"[{styles[r.status]}]{cells[2]}[/]" if r.status in styles else cells[2]
        t.add_row(*[status if c == "status" else cells[at[c]] for c in keep])
    console.print(t)
    if "note" not in keep:
        for r, cells in rows:
            if cells[at["note"]]:
                console.print(f"  {cells[0]} \\[{safe(r.backend)}]: {cells[at['note']]}", soft_wrap=True)
    left = [c for c in COLUMNS if c not in keep and c != "note"]
    if left:
        console.print(f"(not shown at {width} columns: {', '.join(left)}; --wide shows them, parity.md and "
                      "parity.json have every column)", style="dim", soft_wrap=True)
