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


def _train_stage(data: Path, out: Path, cfg: dict, progress: bool) -> str:
    from edgeproof.cli.console import progress_bars
    from edgeproof.train.trainer import TrainConfig, train

    with _quiet(None):
        run_dir = train(TrainConfig(data_dir=data, out_dir=out, model="tiny_cnn", img_size=cfg["image_size"],
                                    epochs=cfg["epochs"], batch_size=32, lr=3e-3, seed=0),
                        progress=progress_bars(progress))
    return str(run_dir)


def _convert_stage(run_dir: Path, art_dir: Path, progress: bool, formats: list[str]
                   ) -> tuple[list[tuple], list[str]]:
    """Convert to `formats` and run convert's held-out gate on them: ((format, status, bytes, error, written) per
    artifact of the manifest, the held-out gate's lines of the passing ones)."""
    from edgeproof.cli.console import progress_bars
    from edgeproof.convert import convert_run
    from edgeproof.convert.manifest import load_manifest
    from edgeproof.convert.source import open_source
    from edgeproof.formats import FORMATS
    from edgeproof.parity.escalate import escalate

    with _quiet(run_dir / "parity" / "library-output.log"):
        source = open_source(run_dir)
        manifest = convert_run(source, art_dir, formats=formats, calib_count=200, progress=progress_bars(progress))
        # convert's own gate on the held-out calibration images, with the fix ladder (as 'edgeproof convert')
        done = [FORMATS[a.format] for a in manifest.artifacts if a.status == "ok" and a.format in formats]
        held = escalate(source, art_dir, done, 200)
        manifest = load_manifest(art_dir)
    return ([(a.format, a.status, a.bytes or 0, a.error or "", a.path is not None) for a in manifest.artifacts],
            [h.line for h in held if not h.failed])


def convert_groups() -> list[list[str]]:
    """Every format, one group per file family in table order: each group converts in its own process. TensorFlow
    is loaded in both, but the TFLite side's converter and LiteRT Quantizer state never sits under onnxruntime's
    calibration, which holds every intermediate tensor of every calibration image (measured on the full demo,
    one process for all: 1347 MiB; TFLite formats alone about 1000 MiB, ONNX formats alone 1275 MiB)."""
    from edgeproof.formats import FORMATS

    families = list(dict.fromkeys(f.family for f in FORMATS.values()))
    return [[f.name for f in FORMATS.values() if f.family == fam] for fam in families]


def _parity_stage(run_dir: Path, art_dir: Path, progress: bool) -> tuple[list[str], str, list[dict]]:
    """(failure lines, the report files line, the promoted fixes); the table and triage are printed here."""
    from edgeproof.cli.console import info, progress_bars
    from edgeproof.cli.parity import print_triage
    from edgeproof.cli.parity_table import print_table
    from edgeproof.parity import report as report_mod
    from edgeproof.parity import run_parity

    with _quiet(run_dir / "parity" / "library-output.log"):
        # a failing int8 artifact gets the fix ladder; the first passing fix is promoted and shown
        # keras_child: TensorFlow computes the reference in a short-lived child, never beside the runtimes
        rep = run_parity(run_dir, artifacts_dir=art_dir, progress=progress_bars(progress), fix=True, promote=True,
                         keras_child=True)
    print_table(rep)
    print_triage(rep)
    if rep.e2e:
        info(f"      end-to-end: {rep.e2e['verdict']}")
    files = f"{rep.files.get('markdown')}  ({', '.join(p.name for p in rep.files.values())})"
    return report_mod.failure_lines(rep), files, list(rep.promoted)


def _in_child(stage: str, fn, *args, memory):
    """fn(*args) in a fresh process, so that one stage's libraries (TensorFlow's graphs, the converters, every
    runtime) are never resident together: the demo's peak is its largest stage's, not their sum (one process:
    2.7 GB on a fresh clone). Its own peak goes to `memory` (a TreeMemory)."""
    from edgeproof.child_call import call_in_child

    done = call_in_child(fn, *args, name=f"edgeproof-demo-{stage}", what=f"run 'edgeproof {stage}' alone to see why")
    memory.process_peak(stage, done.peak_kb)
    return done.value


def run(args: argparse.Namespace) -> int:
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from edgeproof.cli.console import error_line, info

    progress = not args.no_progress
    cfg = FAST if args.fast else FULL
    out = Path(args.out)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    from edgeproof.cli.demo_memory import TreeMemory

    memory = TreeMemory()

    t = _stage(1, f"dataset '{args.dataset}' ({cfg['image_size']}px, {cfg['per_class']} images/class)")
    from edgeproof.train.datasets import build_dataset

    with memory.stage("dataset"):
        data = build_dataset(args.dataset, image_size=cfg["image_size"], per_class=cfg["per_class"])
    timings["dataset"] = time.perf_counter() - t
    info(f"      {data}")

    t = _stage(2, f"train tiny_cnn, {cfg['epochs']} epochs -> {out}")
    with memory.stage("train"):
        run_dir = Path(_in_child("train", _train_stage, data, out, cfg, progress, memory=memory))
    timings["train"] = time.perf_counter() - t

    t = _stage(3, "convert to every format")
    art_dir = run_dir / "artifacts"
    held: list[str] = []
    with memory.stage("convert"):
        for group in convert_groups():
            artifacts, lines = _in_child("convert", _convert_stage, run_dir, art_dir, progress, group, memory=memory)
            held += lines
    timings["convert"] = time.perf_counter() - t
    failed = [a for a in artifacts if a[1] != "ok" and not a[4]]  # no file: not converted
    for fmt, status, size, error, _written in artifacts:
        info(f"      {fmt:15s} {status:6s} {size / 1024:8.1f} KiB  {error}")
    for line in held:
        info(f"      held-out gate: {line}")

    t = _stage(4, "parity: every artifact × backend vs the Keras model")
    with memory.stage("parity"):
        failures, report_files, promoted = _in_child("parity", _parity_stage, run_dir, art_dir, progress,
                                                     memory=memory)
    timings["parity"] = time.perf_counter() - t

    t = _stage(5, "runtime (no TensorFlow) on sample test images")
    with memory.stage("runtime"):
        _sample_predictions(run_dir, art_dir, promoted)
    timings["runtime"] = time.perf_counter() - t

    total = time.perf_counter() - t0
    info("")
    info(f"run folder : {run_dir}")
    info(f"artifacts  : {art_dir}  (manifest.json inside)")
    info(f"report     : {report_files}")
    info("time       : " + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()) + f", total {total:.0f}s wall")
    info(memory.line())
    status = 0
    for fmt, _status, _size, error, _written in failed:
        error_line(f"demo: conversion to {fmt} failed: {error}")
        status = 1
    for line in failures:
        error_line(f"demo: parity failed: {line}")
        status = 1
    from edgeproof.cli.parity import promoted_line

    for p in promoted:
        info("promoted:" + promoted_line(p).removeprefix("  promoted"))
    if status == 0:
        said = f" ({len(promoted)} after a promoted fix, listed above)" if promoted else ""
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
