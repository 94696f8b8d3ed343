"""Plain-text tables shared by library reports and the CLI (no terminal styling here)."""

from __future__ import annotations

from typing import Any

from edgeproof.text import printable


def markdown_table(columns: list[str], rows: list[list[Any]]) -> str:
    """A GitHub-flavoured markdown table; '|' inside cells and headers is escaped, control characters shown."""

    def cells(values) -> str:
        return "| " + " | ".join(printable(v).replace("|", "\\|") for v in values) + " |"

    return "\n".join([cells(columns), "|" + "---|" * len(columns), *(cells(r) for r in rows)])
