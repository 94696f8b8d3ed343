"""`edgeproof bench`: latency, throughput, memory and overhead vs the bare loop;
per model x backend x threads."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path

from edgeproof.cli.trust_flag import add_trust_flag
from edgeproof.errors import UsageError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", help="benchmark artifacts against bare interpreter loops (and Keras)",
        description="Benchmark .tflite/.onnx artifacts: load time, first inference, p50/p90/p99 latency, "
        "throughput, peak RSS and delegate placement, with edgeproof's overhead measured interleaved "
        "against the bare library loop. Each configuration runs in its own process.",
        epilog="examples:\n  edgeproof bench artifacts/ --backend all --threads 1,2 -o bench/\n"
        "  edgeproof bench model.tflite-int8.tflite --source data/test --json\n"
        "  edgeproof bench --suite -o bench-suite/",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="*", metavar="MODEL",
                   help=".tflite/.onnx files or artifacts folders (with --suite: an artifacts folder to use "
                   "instead of building the standard one)")
    p.add_argument("--threads", default=None,
                   help="comma-separated thread counts, e.g. 1,2,4 (default: the device profile's, else all "
                   "usable CPUs; with --suite 1..N)")
    p.add_argument("--batch", type=int, default=1, help="images per call (default 1)")
    p.add_argument("--runs", type=int, default=200,
                   help="timed calls per configuration, at least (default 200)")
    p.add_argument("--seconds", type=float, default=0.0,
                   help="time budget: keep timing until this many seconds passed too (default 0)")
    p.add_argument("--warmup", type=int, default=20, help="untimed warm-up calls (default 20)")
    p.add_argument("--backend", default=None, metavar="LIST",
                   help="comma-separated backends or 'all' (default: the format's preferred backend)")
    p.add_argument("--device", default=None, metavar="PROFILE", help="device profile (see 'edgeproof devices')")
    p.add_argument("--target", metavar="NAME", help="refused: an emulated target (see 'edgeproof targets') proves "
                   "results, not speed; bench on the board itself")
    p.add_argument("--allow-fallback", action="store_true",
                   help="if the device's delegate / execution provider cannot load, benchmark on the CPU "
                   "with a loud warning (default: that configuration fails, naming the library)")
    p.add_argument("--source", default=None,
                   help="image folder or video: also measure decode + preprocess + infer end to end")
    p.add_argument("--keras", default=None, metavar="MODEL.keras",
                   help="also time Keras model(x) and predict() on this model (needs edgeproof[train]; "
                   "at most 200 timed runs)")
    p.add_argument("--suite", action="store_true",
                   help="the standard suite on the embedded dataset's model: every artifact x available "
                   "backend x threads 1..N (trains and converts it first when no folder is given)")
    p.add_argument("--seed", type=int, default=0, help="input seed (default 0)")
    p.add_argument("--no-verify", action="store_true",
                   help="benchmark artifacts even when they differ from the sha256 in manifest.json "
                        "(default: refuse, exit 2)")
    add_trust_flag(p)
    p.add_argument("--no-baseline", action="store_true", help="skip the bare-loop comparison")
    p.add_argument("--no-isolate", action="store_true",
                   help="run every configuration in this process (faster; peak RSS then not per model)")
    p.add_argument("--no-plot", action="store_true", help="do not draw bench.png")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds allowed per configuration")
    p.add_argument("-o", "--out", default=None,
                   help="folder for bench.json, bench.md, bench.png (default: none; --suite: bench-suite)")
    p.add_argument("--json", action="store_true", help="print the full result document as JSON on stdout")
    p.set_defaults(func=run)


def parse_threads(text: str | None, default: list[int | None]) -> list[int | None]:
    if text is None:
        return default
    try:
        vals = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        vals = []
    if not vals or any(v < 1 for v in vals):
        raise UsageError(f"--threads '{text}' is not valid; give positive integers separated by commas, "
                         "e.g. 1,2,4")
    return list(dict.fromkeys(vals))


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _check(args: argparse.Namespace) -> None:
    if args.target:
        raise UsageError(f"bench --target {args.target}: timings under qemu emulation are not the board's speed (qemu "
                         "translates every aarch64 instruction on this host), so edgeproof does not take them; run "
                         "'edgeproof bench MODEL' on the board itself, and 'edgeproof parity RUN --target "
                         f"{args.target}' here for its aarch64 results")
    for name in ("batch", "runs"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name} {getattr(args, name)} is not valid; give an integer >= 1")
    for name in ("warmup", "seconds"):
        if getattr(args, name) < 0:
            raise UsageError(f"--{name} {getattr(args, name)} is not valid; give a number >= 0")
    if args.timeout <= 0:
        raise UsageError(f"--timeout {args.timeout} is not valid; give the seconds allowed per configuration (> 0)")
    if not args.models and not args.suite:
        raise UsageError("no model given; pass .tflite/.onnx files or an artifacts folder, or use --suite")
    if args.keras and not args.keras.endswith(".keras"):
        raise UsageError(f"--keras '{args.keras}' is not a .keras file; give the model.keras of a run folder")
    if args.keras and not os.path.isfile(args.keras):
        raise UsageError(f"--keras model '{args.keras}' does not exist")
    if args.source:
        _check_source(args.source)


def _check_source(source: str) -> None:
    """--source must be a folder with images, an image or a video: say so now, not per configuration."""
    from edgeproof.bench.endtoend import IMAGE_SUFFIXES, VIDEO_SUFFIXES, image_files

    if not os.path.exists(source):
        raise UsageError(f"--source '{source}' does not exist; give an image folder or a video file")
    if os.path.isdir(source):
        if not image_files(Path(source)):
            raise UsageError(f"--source folder '{source}' holds no images ({', '.join(IMAGE_SUFFIXES)})")
    elif not source.lower().endswith(IMAGE_SUFFIXES + VIDEO_SUFFIXES):
        raise UsageError(f"--source '{source}' is not an image folder, image or video file "
                         f"(videos: {', '.join(VIDEO_SUFFIXES)})")


def run(args: argparse.Namespace) -> int:
    from edgeproof.bench import report, runner
    from edgeproof.bench.summary import summarize_records
    from edgeproof.cli.console import info, print_json, progress, warn
    from edgeproof.runtime import machine

    _check(args)
    models, keras_model, source = list(args.models), args.keras, args.source
    default_threads: list[int | None] = [usable_cpus()]
    if args.device:
        from edgeproof.devices import get_profile

        prof = get_profile(args.device)
        if prof.threads:
            default_threads = [prof.threads]
    backends = [b.strip() for b in args.backend.split(",") if b.strip()] if args.backend else None
    out = args.out
    if args.suite:
        from edgeproof.cli.bench_suite import prepare_suite

        suite = prepare_suite(models[0] if models else None, progress_enabled=not args.json)
        models = [str(suite["artifacts"])]
        keras_model = keras_model or suite.get("keras")
        source = source or suite.get("source")
        backends = backends or ["all"]
        default_threads = list(range(1, usable_cpus() + 1))
        out = out or "bench-suite"
    threads = parse_threads(args.threads, default_threads)
    if out:  # before the measurements, not after them
        from edgeproof.outdir import ensure_writable_dir

        ensure_writable_dir(out)
    common = {"batch": args.batch, "runs": args.runs, "warmup": args.warmup, "min_seconds": args.seconds,
              "seed": args.seed, "device": args.device, "allow_fallback": args.allow_fallback,
              "baseline": not args.no_baseline, "source": source, "verify": not args.no_verify,
              "trust_model": args.trust_model}
    specs, skipped = runner.plan(models + ([keras_model] if keras_model else []), backends, threads, **common)
    for s in specs:
        if s.kind == "keras":
            s.source = None
    if not specs:
        raise UsageError("nothing to benchmark: " + "; ".join(skipped))
    runner.preflight(specs)
    for s in skipped:
        warn(f"skipped {s}")
    mach = machine.describe()
    with progress(enabled=not args.json) as prog:
        task = prog.add_task("benchmarking", total=len(specs))

        seen: set[str] = set()

        def done(spec, recs):
            prog.update(task, advance=1, description=f"benchmarking {spec.label()}")
            for r in recs:
                relayed = [w for w in r.get("warnings") or [] if w not in seen]
                seen.update(relayed)
                for w in relayed:
                    warn(f"{spec.label()}: {w.removeprefix('warning:').strip()}")
                placement = r.get("placement") or {}
                if r.get("status") == "ok" and placement.get("fallback") and not any("FALLBACK" in w for w in
                                                                                      r.get("warnings") or []):
                    # the child's own warning went to its captured stderr: repeat it here, loudly
                    warn(f"DEVICE FALLBACK: {r['format']} on {r['backend']} ({r['threads']} thr) ran on the "
                         f"CPU, not the accelerator (--allow-fallback): {placement.get('where')}")
                if r.get("status") != "ok":
                    warn(f"{r['format']} on {r['backend'] or 'default'} ({r['threads']} thr) failed: "
                         f"{r['error']}")

        records = runner.run_specs(specs, isolate=not args.no_isolate, timeout_s=args.timeout, on_done=done)
    doc = {
        "schema": 1,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "edgeproof " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["bench"]
        else "edgeproof bench (API)",
        "machine": mach,
        "settings": {**common, "threads": threads, "backends": backends or "preferred",
                     "isolate": not args.no_isolate},
        "results": records,
        "skipped": skipped,
        "summary": summarize_records(records),
    }
    paths = report.write_outputs(doc, out, png=not args.no_plot) if out else None
    if args.json:
        print_json({**doc, "outputs": paths})
    else:
        print_table(doc)
        ov = doc["summary"]["overhead"]
        if ov["count"]:
            info(f"overhead vs a bare loop doing the same work: median {ov['median']:.3f}×, worst {ov['max']:.3f}× "
                 f"({ov['within_goal']}/{ov['count']} within {ov['goal']}× and {ov.get('goal_us', 5.0):g} µs)")
        if paths:
            info(f"wrote {paths['json']}, {paths['md']}" + (f", {paths['png']}" if paths["png"] else ""))
            if paths["png_skipped"]:
                warn(f"PNG skipped: {paths['png_skipped']}")
        else:
            info("add -o DIR to write bench.json, bench.md and bench.png")
    failed = [r for r in records if r.get("status") != "ok"]
    if any(r.get("kind") == "keras" for r in failed):
        from edgeproof.cli.console import error_line

        why = next(r.get("error") for r in failed if r.get("kind") == "keras")
        error_line(f"the requested Keras baseline (--keras) did not run: {why}")
        return 2
    return 1 if failed and len(failed) == len(records) else 0


def print_table(doc: dict) -> None:
    """The results as a rich table on stdout (wide when piped, so columns are not squeezed)."""
    from rich.console import Console
    from rich.table import Table

    from edgeproof.bench.report import COLUMNS, row
    from edgeproof.cli.console import safe
    from edgeproof.runtime.machine import one_line

    t = Table(title=safe(f"edgeproof bench — {one_line(doc['machine'])}"), title_justify="left")
    for c in COLUMNS:
        t.add_column(c, no_wrap=c != "placement", justify="left" if c in ("format", "backend", "placement")
                     else "right")
    for r in doc["results"]:
        t.add_row(*(safe(c) for c in row(r)))
    Console(highlight=False, width=None if sys.stdout.isatty() else 220).print(t)
