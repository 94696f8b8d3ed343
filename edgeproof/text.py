"""Text from files (labels, paths, metadata) made safe to show on a terminal.

Embedded labels and file names are data, not terminal commands: raw, ESC[2J clears the screen, OSC 0
sets the window title, OSC 52 writes the clipboard, and a label with a newline forges a result row.
`printable()` shows every control character as a visible escape instead; --json output needs no such
step (JSON escapes them itself).
"""

from __future__ import annotations

import re
from typing import Any

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\x1b": "\\e"}
# C0 and C1 controls, DEL, line/paragraph separators, and the bidirectional overrides and isolates that
# reorder what is shown ("Trojan Source"); other format characters (zero-width joiners in emoji) are kept.
# Compiled on first use: most text is str.isprintable() (which every one of these characters fails), so a
# one-shot run never needs it.
_UNSAFE = "[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069]"


def _escape(m: re.Match) -> str:
    c = m.group()
    return _NAMED.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")


def printable(value: Any) -> str:
    """str(value) with every control character shown as an escape (\\n, \\e, \\x07, \\u202e): one line, inert."""
    text = str(value)
    return text if text.isprintable() else re.sub(_UNSAFE, _escape, text)
