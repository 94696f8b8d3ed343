"""`edgeproof demo`: the whole story on the embedded real-photo dataset, no arguments needed.

dataset (textures) -> train -> convert to every format -> parity -> runtime on sample images,
then where everything is. Exit status: 0 when every stage succeeds and every artifact passes
parity, 1 when a conversion or a parity check fails, 2 on bad input.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

# (image size, images per class, epochs). The twelve-class textures set is meant to be imperfect (about 90 %
# float test accuracy: measured 90.5 % full, 86.5 % --fast), so the parity report has flips and near-ties to
# show. The whole full demo used 90 s of CPU time (train 179 s wall on the shared 2-core machine at load ~10);
# --fast is for tests and a quick look.
FULL = {"image_size": 64, "per_class": 100, "epochs": 12}
FAST = {"image_size": 32, "per_class": 60, "epochs": 10}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="dataset -> train -> convert -> parity -> run, in one command",
                       description="Build the embedded real-photo 'textures' dataset, train a small CNN, convert "
                       "it to every format, prove parity of every artifact against the Keras model, and run the "
                       "TF-free runtime on a few test images.")
    p.add_argument("-o", "--out", default="runs/demo", metavar="DIR", help="run folder (default runs/demo)")
    p.add_argument("--fast", action="store_true", help=f"smaller variant ({FAST['image_size']}px, "
                   f"{FAST['per_class']} images/class, {FAST['epochs']} epochs)")
    p.add_argument("--dataset", default="textures", choices=("textures", "shapes"),
                   help="embedded dataset (default textures: real photos)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _quiet(log: Path | None):
    """TensorFlow/converter chatter (fd 1/2, print, warnings) goes to `log` (None: nowhere; training swaps
    the run folder in by a rename, so no log can live inside it before it exists)."""
    from edgeproof.stderr_filter import library_output_to

    return library_output_to(log)


def _stage(n: int, text: str) -> float:
    from edgeproof.cli.console import info, safe

    info(f"[bold cyan]\\[{n}/5][/] {safe(text)}", markup=True)
    return time.perf_counter()


def run(args: argparse.Namespace) -> int:
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from edgeproof.cli.console import error_line, info, progress_bars

    prog = progress_bars(not args.no_progress)
    cfg = FAST if args.fast else FULL
    out = Path(args.out)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}

    t = _stage(1, f"dataset '{args.dataset}' ({cfg['image_size']}px, {cfg['per_class']} images/class)")
    from edgeproof.train.datasets import build_dataset

    data = build_dataset(args.dataset, image_size=cfg["image_size"], per_class=cfg["per_class"])
    timings["dataset"] = time.perf_counter() - t
    info(f"      {data}")

    t = _stage(2, f"train tiny_cnn, {cfg['epochs']} epochs -> {out}")
    from edgeproof.train.trainer import TrainConfig, train

    with _quiet(None):
        run_dir = train(TrainConfig(data_dir=data, out_dir=out, model="tiny_cnn", img_size=cfg["image_size"],
                                    epochs=cfg["epochs"], batch_size=32, lr=3e-3, seed=0), progress=prog)
    timings["train"] = time.perf_counter() - t

    t = _stage(3, "convert to every format")
    from edgeproof.convert import convert_run

    art_dir = run_dir / "artifacts"
    from edgeproof.convert.manifest import load_manifest
    from edgeproof.convert.source import open_source
    from edgeproof.formats import FORMATS
    from edgeproof.parity.escalate import escalate

    with _quiet(run_dir / "parity" / "library-output.log"):
        source = open_source(run_dir)
        manifest = convert_run(source, art_dir, formats="all", calib_count=200, progress=prog)
        # convert's own gate on the held-out calibration images, with the fix ladder (as 'edgeproof convert')
        held = escalate(source, art_dir, [FORMATS[a.format] for a in manifest.artifacts if a.status == "ok"], 200)
        manifest = load_manifest(art_dir)
    timings["convert"] = time.perf_counter() - t
    failed = [a for a in manifest.artifacts if a.status != "ok" and a.path is None]  # no file: not converted
    for a in manifest.artifacts:
        info(f"      {a.format:15s} {a.status:6s} {(a.bytes or 0) / 1024:8.1f} KiB  {a.error or ''}")
    for h in held:
        if not h.failed:
            info(f"      held-out gate: {h.line}")

    t = _stage(4, "parity: every artifact × backend vs the Keras model")
    from edgeproof.cli.parity_table import print_table
    from edgeproof.parity import report as report_mod
    from edgeproof.parity import run_parity

    with _quiet(run_dir / "parity" / "library-output.log"):
        # a failing int8 artifact gets the fix ladder; the first passing fix is promoted and shown
        rep = run_parity(run_dir, artifacts_dir=art_dir, progress=prog, fix=True, promote=True)
    timings["parity"] = time.perf_counter() - t
    print_table(rep)
    from edgeproof.cli.parity import print_triage

    print_triage(rep)
    if rep.e2e:
        info(f"      end-to-end: {rep.e2e['verdict']}")

    t = _stage(5, "runtime (no TensorFlow) on sample test images")
    _sample_predictions(run_dir, art_dir, rep.promoted)
    timings["runtime"] = time.perf_counter() - t

    total = time.perf_counter() - t0
    info("")
    info(f"run folder : {run_dir}")
    info(f"artifacts  : {art_dir}  (manifest.json inside)")
    info(f"report     : {rep.files.get('markdown')}  ({', '.join(p.name for p in rep.files.values())})")
    info("time       : " + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()) + f", total {total:.0f}s")
    status = 0
    for a in failed:
        error_line(f"demo: conversion to {a.format} failed: {a.error}")
        status = 1
    for line in report_mod.failure_lines(rep):
        error_line(f"demo: parity failed: {line}")
        status = 1
    from edgeproof.cli.parity import promoted_line

    for p in rep.promoted:
        info("promoted:" + promoted_line(p).removeprefix("  promoted"))
    if status == 0:
        said = f" ({len(rep.promoted)} after a promoted fix, listed above)" if rep.promoted else ""
        info(f"[bold green]every artifact in place matches the trained model within its tolerance{said}[/]",
             markup=True)
    return status


def _sample_predictions(run_dir: Path, art_dir: Path, promoted: list[dict], count: int = 4) -> None:
    from edgeproof.cli.console import info
    from edgeproof.formats import FORMATS, artifact_filename
    from edgeproof.runtime import load
    from edgeproof.runtime.preprocess import load_batch
    from edgeproof.train.run_dir import load_run

    run = load_run(run_dir)
    test = run.split("test")
    step = max(1, len(test) // count)
    picks = test[::step][:count]
    path = art_dir / artifact_filename(FORMATS["tflite-int8"])
    if not path.exists():  # a fix of another format (int16x8) took its place, under its own name
        path = Path(next(p["path"] for p in promoted if p.get("replaces") == "tflite-int8"))
    with load(path) as model:
        x, _used, _ = load_batch([p for p, _ in picks], model.preprocess)
        top = model.topk(model.predict(x), k=3)
        info(f"      {path.name} on {model.backend_name}:")
        for (p, y), preds in zip(picks, top):
            shown = ", ".join(f"{lab} {s:.2f}" for lab, s in preds)
            mark = "✓" if preds[0][0] == run.labels[y] else "✗"
            info(f"      {mark} {Path(p).name:28s} true {run.labels[y]:12s} -> {shown}")
