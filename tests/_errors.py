"""The one error line a CLI command prints on stderr (shared by the bad-input tests)."""

from __future__ import annotations


def one_error_line(err: str, ignore_prefix: str | None = None) -> str:
    """The only non-blank stderr line (lines starting with `ignore_prefix`, e.g. 'model:', left out)."""
    lines = [ln for ln in err.strip().splitlines()
             if ln.strip() and not (ignore_prefix and ln.startswith(ignore_prefix))]
    assert len(lines) == 1, err
    return lines[0]
