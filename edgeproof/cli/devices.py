"""`edgeproof devices list | show NAME | detect`: the device profiles and which one fits this host."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "devices", help="list device profiles, show one, or detect the one for this host",
        description="Device profiles pick the artifact, backend, accelerator (delegate / execution provider "
                    "/ OpenVINO device) and threads for a target; pass one to run/bench/convert with --device NAME.",
    )
    dsub = p.add_subparsers(dest="devices_command", metavar="ACTION")
    p_list = dsub.add_parser("list", help="every profile, one line each",
                             description="List every device profile.")
    p_list.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    p_show = dsub.add_parser("show", help="one profile in full, and whether this host can run it",
                             description="Show one device profile: artifacts, backend, accelerator, threads, "
                                         "install lines, known limits, and a check of this host against it.")
    p_show.add_argument("name", help="profile name (see 'edgeproof devices list') or a path to a profile .toml")
    p_show.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    p_det = dsub.add_parser("detect", help="name the best profile for this host, with reasons",
                            description="Read this host (architecture, board model, CPU flags, onnxruntime "
                                        "providers, libedgetpu.so.1, OpenVINO devices, Jetson release) and "
                                        "name the best profile, with the reasons.")
    p_det.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    for q in (p, p_list, p_show, p_det):
        q.set_defaults(func=run)


def _short_accelerator(p: Any) -> str:
    if p.accelerator:
        return p.accelerator.replace("ExecutionProvider", "")
    return p.backend_class.cpu_label


def _check_rows(profile: Any) -> list[tuple[bool, str]]:
    from edgeproof.devices.probe import check_profile, host_facts

    return check_profile(profile, host_facts())


def run(args: argparse.Namespace) -> int:
    from edgeproof.cli.console import print_json, table
    from edgeproof.devices import detect, get_profile, list_profiles

    action = getattr(args, "devices_command", None) or "list"
    as_json = getattr(args, "json", False)

    if action == "list":
        profiles = list_profiles()
        if as_json:
            print_json([p.to_dict() for p in profiles])
            return 0
        table("edgeproof device profiles  (details: edgeproof devices show NAME)",
              ["name", "backend", "accelerator", "artifacts", "threads"],
              [[p.name, p.backend, _short_accelerator(p), ", ".join(p.artifacts), p.threads or "default"]
               for p in profiles])
        return 0

    if action == "show":
        profile = get_profile(args.name)
        checks = _check_rows(profile)
        if as_json:
            print_json({**profile.to_dict(), "host_check": [{"ok": ok, "message": m} for ok, m in checks],
                        "host_ready": all(ok for ok, _ in checks)})
            return 0
        _print_profile(profile, checks)
        return 0

    profile, reasons = detect()
    if as_json:
        from edgeproof.devices.probe import host_facts

        print_json({"profile": profile.name, "reasons": reasons, "facts": host_facts().to_dict(),
                    "detail": profile.to_dict()})
        return 0
    _say(profile.name)
    for r in reasons:
        _say(f"  - {r}")
    _say(f"use it with: edgeproof bench --device {profile.name}   (details: edgeproof devices show {profile.name})")
    return 0


def _say(text: Any) -> None:
    """A line of profile text (profiles can be user TOML files): control characters shown escaped."""
    from edgeproof.text import printable

    print(printable(text))


def _print_profile(p: Any, checks: list[tuple[bool, str]]) -> None:
    rows = [
        ("name", p.name), ("description", p.description), ("architecture", ", ".join(p.arch)),
        ("artifacts", " > ".join(p.artifacts)), ("backend", p.backend),
        ("accelerator", p.accelerator or "none (CPU)"),
    ]
    if p.delegates:
        rows.append(("delegates", ", ".join(p.delegates)))
    if p.providers:
        rows.append((p.backend_class.providers_label, " -> ".join(p.providers)))
    for ep, opts in p.provider_options.items():
        rows.append((f"options {ep}", ", ".join(f"{k}={v}" for k, v in opts.items())))
    rows += [("threads", p.threads or "runtime default"), ("input size hint", p.input_size_hint or "-"),
             ("file", p.source)]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        _say(f"{k:<{width}}  {v}")
    _say("install (runtime only):")
    for line in p.install:
        _say(f"  {line}")
    _say("known limits:")
    for line in p.limits:
        _say(f"  - {line}")
    _say("this host:")
    for ok, message in checks:
        _say(f"  [{'ok' if ok else 'no'}] {message}")
