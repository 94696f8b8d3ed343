"""`edgeproof run MODEL SOURCE --target NAME`: the same command, run by the edgeproof inside an emulated target.

The emulated process decodes, preprocesses and infers with the target's aarch64 wheels; its stdout, stderr and
exit code are this command's, so the lines (and --json objects) are those the board would print.
"""

from __future__ import annotations

import argparse

from edgeproof.errors import UsageError


def target_argv(argv: list[str]) -> list[str]:
    """The command line without --target NAME / --target=NAME."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--target":
            skip = True
        elif not a.startswith("--target="):
            out.append(a)
    return out


def run_on_target(args: argparse.Namespace) -> int:
    from edgeproof.targets.sysroot import emulation_problem, open_target

    if args.engine == "ray":
        raise UsageError("--target runs the runtime inside the emulated target; it cannot be combined with "
                         "--engine ray")
    if args.show:
        raise UsageError("--show needs a display, which the emulated target has none of; use --save DIR")
    argv = getattr(args, "argv", None)
    if argv is None:
        raise UsageError("--target needs the command line (call edgeproof.cli.main.parse_args)")
    sysroot = open_target(args.target)
    problem = emulation_problem()
    if problem:
        raise UsageError(f"--target {args.target}: {problem}")
    code = sysroot.run_python(["-m", "edgeproof", *target_argv(list(argv))], capture=False).returncode
    from edgeproof.cli.console import warn

    warn(f"--target {args.target}: latency and fps above are qemu emulation's on this host, not the board's speed")
    return code
