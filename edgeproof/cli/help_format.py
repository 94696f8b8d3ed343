"""Help text that wraps at the terminal's width, for every command.

Several commands lay out their description and epilog in lines and indented lists, so they used
RawDescriptionHelpFormatter, which never wraps: `edgeproof convert --help` printed one 400-character line.
This formatter keeps each line break and indentation the text has and wraps each line that is too long
at the width argparse measures (the terminal's, or $COLUMNS), continuing under its indentation.
"""

from __future__ import annotations

import argparse
import re
import textwrap

_ITEM = r"^(?:[-*•] |[\w][\w .,/'()-]{0,40}: |\w[\w-]*:$)"  # "- x", "accuracy: ...", "Examples:"


def paragraphs(text: str) -> list[tuple[str, str]]:
    """(indentation, text) of each paragraph: an unindented line joins the one before it unless it starts an
    item ("- ...", "label: ..."); indented lines (tables, examples) and blank lines stay as they are."""
    out: list[tuple[str, str]] = []
    joinable = False
    for line in text.splitlines():
        lead, body = line[:len(line) - len(line.lstrip())], line.strip()
        if not body:
            out.append(("", ""))
            joinable = False
        elif not lead and joinable and not re.match(_ITEM, body):
            out[-1] = ("", out[-1][1] + " " + body)
        else:
            out.append((lead, body))
            joinable = not lead
    return out


class WrappingHelpFormatter(argparse.RawDescriptionHelpFormatter):
    def _fill_text(self, text: str, width: int, indent: str) -> str:
        out = []
        for lead, body in paragraphs(text):
            if not body:
                out.append("")
                continue
            hang = lead + ("  " if body[:2] in ("- ", "* ") else "")
            out.extend(textwrap.wrap(body, max(20, width - len(indent)), initial_indent=indent + lead,
                                     subsequent_indent=indent + hang, break_on_hyphens=False) or [""])
        return "\n".join(out)


def apply(parser: argparse.ArgumentParser) -> None:
    """Give `parser` and every subparser under it the wrapping formatter."""
    parser.formatter_class = WrappingHelpFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                apply(child)
