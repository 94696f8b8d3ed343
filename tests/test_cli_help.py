"""Honest help (issue 24, item 5): it wraps at the terminal's width, a flag that exists in several commands
has the same placeholder, and --workers says in each command which of its three meanings it has."""

from __future__ import annotations

import argparse

import pytest

from edgeproof.cli.main import SUBCOMMANDS, build_parser


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


@pytest.mark.parametrize("columns", [80, 120])
def test_every_commands_help_fits_the_terminal(monkeypatch, columns):
    monkeypatch.setenv("COLUMNS", str(columns))
    commands = _commands()
    assert set(commands) == set(SUBCOMMANDS)
    for name, p in commands.items():
        long = [ln for ln in p.format_help().splitlines() if len(ln) > columns]
        assert not long, (name, columns, long[:3])


def test_help_keeps_its_own_line_breaks_and_joins_wrapped_sentences(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    text = _commands()["parity"].format_help()
    assert "\nexit status: 0 all pass" in text  # an item of the epilog starts its own line
    assert "the images that changed (McNemar" in text  # a sentence the source broke is one paragraph again


def _option(p: argparse.ArgumentParser, flag: str) -> argparse.Action | None:
    return next((a for a in p._actions if flag in a.option_strings), None)


def test_device_has_one_placeholder_everywhere():
    metavars = {name: _option(p, "--device").metavar for name, p in _commands().items() if _option(p, "--device")}
    assert len(metavars) >= 4 and set(metavars.values()) == {"PROFILE"}, metavars


def test_workers_says_which_of_its_three_meanings_it_has():
    commands = _commands()
    meaning = {"train": "training processes", "serve": "interpreter replicas", "run": "Ray actors",
               "parity": "Ray actors"}
    for name, words in meaning.items():
        help_text = _option(commands[name], "--workers").help
        assert help_text.startswith(words) or f": {words}" in help_text.split(";")[0], (name, help_text)
