"""`edgeproof targets list | build NAME | show NAME`: emulated aarch64 targets (a Raspberry Pi's userland in qemu)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "targets", help="emulated aarch64 targets (Raspberry Pi userland under qemu): list, build, show",
        description="An emulated target is a Raspberry Pi's (or a generic aarch64 machine's) userland: Debian's arm64 "
                    "packages and the aarch64 wheels of the runtime, in a sysroot under the user's cache, run by "
                    "qemu-user with the board's CPU model. 'parity --target' and 'run --target' use it. Emulation "
                    "proves the aarch64 kernels' results, not the board's speed.")
    tsub = p.add_subparsers(dest="targets_command", metavar="ACTION")
    p_list = tsub.add_parser("list", help="every target and whether it is built", description="List the targets.")
    p_build = tsub.add_parser("build", help="build (or rebuild) a target's sysroot",
                              description="Download Debian's arm64 packages (apt-get, a private configuration: no "
                                          "root) and the aarch64 wheels (pip), unpack them into a sysroot under "
                                          "the user's cache folder, replacing an existing one only when done.")
    p_build.add_argument("name", help="target name (see 'edgeproof targets list')")
    p_show = tsub.add_parser("show", help="a built target: versions, size, the CPU features the emulation reports",
                             description="Show a target and, when built, its manifest and what its emulated CPU "
                                         "reports (rerun with --probe to ask it again).")
    p_show.add_argument("name", help="target name")
    p_show.add_argument("--probe", action="store_true", help="run the emulated Python now and report what it sees")
    for q in (p, p_list, p_build, p_show):
        q.add_argument("--json", action="store_true", help="machine-readable output on stdout")
        q.set_defaults(func=run)


def _size(n: int) -> str:
    return f"{n / 1024 / 1024:.0f} MiB"


def run(args: argparse.Namespace) -> int:
    action = getattr(args, "targets_command", None) or "list"
    return {"list": _list, "build": _build, "show": _show}[action](args)


def _list(args: argparse.Namespace) -> int:
    import json

    from edgeproof.cli.console import print_json, table
    from edgeproof.targets.catalog import TARGETS
    from edgeproof.targets.sysroot import target_dir

    rows = []
    for t in TARGETS.values():
        manifest = target_dir(t.name) / "target.json"
        built = json.loads(manifest.read_text()) if manifest.is_file() else None
        state = f"not supported (edgeproof targets show {t.name})" if t.unsupported else \
            (f"built, {_size(built['size_bytes'])}" if built else f"not built (edgeproof targets build {t.name})")
        rows.append({"name": t.name, "description": t.description, "userland": f"Debian {t.suite}, Python {t.python}",
                     "cpu": t.cpu.qemu, "state": state, "path": str(target_dir(t.name)),
                     **({"unsupported": t.unsupported} if t.unsupported else {})})
    if args.json:
        print_json(rows)
        return 0
    table("emulated targets  (details: edgeproof targets show NAME)", ["name", "userland", "cpu", "state"],
          [[r["name"], r["userland"], r["cpu"], r["state"]] for r in rows])
    return 0


def _build(args: argparse.Namespace) -> int:
    from edgeproof.cli.console import info, print_json, progress_bars, warn
    from edgeproof.targets.build import build_target, describe

    result = build_target(args.name, progress=progress_bars(not args.json))
    if args.json:
        print_json(describe(result))
        return 0
    info(f"target {args.name}: {result.sysroot.path} — {_size(result.size_bytes)}, built in {result.seconds:.0f} s")
    for wheel, why in result.missing.items():
        warn(f"{wheel}: {why}; its rows are 'unsupported' on {args.name}")
    if result.probe:
        _say_probe(result.probe)
    else:
        from edgeproof.targets.sysroot import emulation_problem

        warn(f"not probed: {emulation_problem()}")
    return 0


def _say_probe(p: dict) -> None:
    from edgeproof.cli.console import info

    info(f"  emulated: {p['machine']}, Python {p['python']}, {p['libc']}, board '{p.get('board') or '-'}', "
         f"CPU part {p.get('cpu_part')}")
    info(f"  CPU features (AT_HWCAP): {' '.join(p['hwcaps'])}")
    info(f"  XNNPACK can use: {'; '.join(p['xnnpack']) or 'none'}")


def _show(args: argparse.Namespace) -> int:
    from edgeproof.cli.console import info, print_json
    from edgeproof.targets.catalog import get_target
    from edgeproof.targets.sysroot import open_target

    t = get_target(args.name)
    sysroot = open_target(args.name)
    m = dict(sysroot.manifest)
    if args.probe:
        from edgeproof.targets.remote import probe

        m["probe"] = probe(sysroot)
    if args.json:
        print_json(m)
        return 0
    info(f"{t.name}: {t.description}")
    info(f"  path: {sysroot.path}  ({_size(m['size_bytes'])}, built {m['built_at']} in {m['build_seconds']:.0f} s)")
    info(f"  Debian {m['suite']} arm64, Python {m['python']}; qemu -cpu {m['cpu']} ({m['core']})")
    info(f"  backends: {', '.join(m['backends']) or 'none'}")
    info("  wheels: " + ", ".join(f"{k} {v}" for k, v in m["wheels"].items()))
    for wheel, why in m.get("missing", {}).items():
        info(f"  missing: {wheel}: {why}")
    if m.get("probe"):
        _say_probe(m["probe"])
    return 0
