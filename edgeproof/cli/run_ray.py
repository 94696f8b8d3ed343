"""The --engine / --address / --workers flags shared by `run` and `parity`, and the engine lines of `run`'s summary."""

from __future__ import annotations

import argparse

ENGINES = ("local", "ray")


def add_engine_flags(p: argparse.ArgumentParser, work: str = "the per-image work") -> None:
    g = p.add_argument_group("scale-out (Ray Data; needs: pip install 'edgeproof[ray]')")
    g.add_argument("--engine", choices=ENGINES, default="local",
                   help=f"where {work} runs: 'local' (this process) or 'ray' (Ray Data actors, each loading the "
                        "model once; same results in the same order). Default local")
    g.add_argument("--address", metavar="ADDR",
                   help="with --engine ray: join this Ray cluster ('auto', HOST:6379, or ray://HOST:10001); "
                        "default $RAY_ADDRESS, else a local Ray started for this run and stopped after it")
    g.add_argument("--workers", type=int, metavar="N",
                   help="with --engine ray: Ray actors, each a process with its own copy of the model (default: one "
                        "per CPU of the local Ray or the cluster). (train --workers: training processes; serve "
                        "--workers: interpreter threads)")


def check_engine_flags(args: argparse.Namespace) -> None:
    from edgeproof.errors import UsageError

    if args.engine != "ray":
        for flag, val in (("--address", args.address), ("--workers", args.workers)):
            if val is not None:
                raise UsageError(f"{flag} applies to --engine ray only; add --engine ray or drop {flag}")
        return
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be >= 1; got {args.workers}")
    for flag in ("save", "show"):
        if getattr(args, flag, None):
            raise UsageError(f"--{flag} needs the local engine (frames stay on the Ray workers); drop --{flag} or "
                             "--engine ray")
    from edgeproof.scaleout.ray_cluster import import_ray

    import_ray("--engine ray")  # before any model or source work: one line with the pip command


def engine_lines(engine: dict) -> list[str]:
    where = "a local Ray started for this run" if engine.get("started_here") else f"Ray at {engine.get('address')}"
    lines = [f"engine: ray, {engine['actors']} actor(s) on {where} ({engine.get('cluster_cpus')} CPU(s), "
             f"{engine.get('nodes')} node(s); ready in {engine.get('startup_s', 0):.1f} s)"]
    for w in engine.get("per_worker", []):
        lines.append(f"  worker {w['worker']}: {w['count']} input(s), {w['skipped']} skipped, "
                     f"{w['images_per_s']:.1f} images/s while busy ({w['busy_s']:.2f} s)")
    return lines
