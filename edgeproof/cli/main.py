"""Entry point: parse_args(argv) / main(args) -> int, so every subcommand is testable in-process.

Each subcommand lives in edgeproof/cli/<name>.py and exposes ``register(subparsers)``, which adds
its parser and sets ``func(args) -> int``. Subcommand modules import nothing heavy at top level.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

import edgeproof
from edgeproof.errors import EdgeproofError

SUBCOMMANDS = ("demo", "train", "convert", "inspect", "run", "serve", "parity", "bench", "export", "devices",
               "targets", "version")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser, or (``only``) one with just that subcommand: a one-shot `run` skips the others' imports."""
    parser = argparse.ArgumentParser(
        prog="edgeproof",
        description="Train an image classifier, convert it for the edge, run it without TensorFlow, "
        "and prove every artifact still matches the trained model.",
    )
    parser.add_argument("--version", action="version", version=f"edgeproof {edgeproof.__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in (only,) if only else SUBCOMMANDS:
        importlib.import_module(f"edgeproof.cli.{name}").register(sub)
    from edgeproof.cli.help_format import apply

    apply(parser)  # help wraps at the terminal's width, keeping each command's own line breaks
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    argv = list(sys.argv[1:] if argv is None else argv)
    first = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(first if first in SUBCOMMANDS else None).parse_args(argv)
    args.argv = argv  # the command line as given (`run --target` hands it to the emulated edgeproof)
    return args


def main(args: argparse.Namespace) -> int:
    """Run the parsed subcommand with the library's log records shown on stderr; the exit code."""
    import logging
    import os

    from edgeproof.cli.console import cli_logging

    # Process-wide settings of the libraries the commands drive are the process owner's (this CLI), never
    # the library's: FFmpeg's own log lines ('moov atom not found', '[tcp @ 0x..] Connection refused')
    # duplicate the one clear error edgeproof reports. A user's own setting wins.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    if not getattr(args, "func", None):
        build_parser().print_help()
        return 2
    with cli_logging(logging.DEBUG if getattr(args, "debug", False) else logging.INFO):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from edgeproof.cli.console import error_line

    try:
        return int(args.func(args) or 0)
    except EdgeproofError as exc:
        if args.debug:
            raise
        error_line(str(exc))
        return exc.exit_code
    except KeyboardInterrupt as exc:
        from edgeproof.runtime.stop_signals import EXIT_TERMINATED, Terminated

        if isinstance(exc, Terminated):  # SIGTERM before or after the pipeline (model loading, say)
            error_line("terminated (SIGTERM)")
            return EXIT_TERMINATED
        error_line("interrupted")
        return 130
    except Exception as exc:  # an unexpected bug: one line, traceback only with --debug
        if args.debug:
            raise
        error_line(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)")
        return 1


def run_cli(argv: Sequence[str] | None = None) -> int:
    """parse + run; argparse usage errors exit 2 via SystemExit."""
    return main(parse_args(argv))


def entry() -> None:
    sys.exit(run_cli())
