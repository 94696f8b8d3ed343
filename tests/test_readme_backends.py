"""The README's format table names the same backends as the format table in code (issue 24, item 5: it did
not name litert-compiled), and the runtime section names every backend."""

from __future__ import annotations

import re
from pathlib import Path

from edgeproof.formats import BACKENDS, FORMATS

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_format_table_lists_each_formats_backends_in_order():
    text = README.read_text(encoding="utf-8")
    rows = {m[1]: m[2] for m in re.finditer(r"^\| `([\w-]+)` \| `[^`]+` \| ([^|]+) \|", text, re.M)}
    assert set(rows) == set(FORMATS), sorted(rows)
    for name, fmt in FORMATS.items():
        listed = [b.split(" (")[0].strip() for b in rows[name].split(",")]
        assert listed == list(fmt.backends), (name, listed, fmt.backends)


def test_readme_names_every_backend():
    text = README.read_text(encoding="utf-8")
    for name in BACKENDS:
        assert f"`{name}`" in text, name
