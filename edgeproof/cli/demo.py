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


def _convert_stage(run_dir: Path, art_dir: Path, progress: bool) -> tuple[list[tuple], list[str]]:
    """((format, status, bytes, error, written) per artifact, the held-out gate's lines of the passing ones)."""
    from edgeproof.cli.console import progress_bars
    from edgeproof.convert import convert_run
    from edgeproof.convert.manifest import load_manifest
    from edgeproof.convert.source import open_source
    from edgeproof.formats import FORMATS
    from edgeproof.parity.escalate import escalate

    with _quiet(run_dir / "parity" / "library-output.log"):
        source = open_source(run_dir)
        manifest = convert_run(source, art_dir, formats="all", calib_count=200, progress=progress_bars(progress))
        # convert's own gate on the held-out calibration images, with the fix ladder (as 'edgeproof convert')
        held = escalate(source, art_dir, [FORMATS[a.format] for a in manifest.artifacts if a.status == "ok"], 200)
        manifest = load_manifest(art_dir)
    return ([(a.format, a.status, a.bytes or 0, a.error or "", a.path is not None) for a in manifest.artifacts],
            [h.line for h in held if not h.failed])


def _parity_stage(run_dir: Path, art_dir: Path, progress: bool) -> tuple[list[str], str, list[dict]]:
    """(failure lines, the report files line, the promoted fixes); the table and triage are printed here."""
    from edgeproof.cli.console import info, progress_bars
    from edgeproof.cli.parity import print_triage
    from edgeproof.cli.parity_table import print_table
    from edgeproof.parity import report as report_mod
    from edgeproof.parity import run_parity

    with _quiet(run_dir / "parity" / "library-output.log"):
        # a failing int8 artifact gets the fix ladder; the first passing fix is promoted and shown
        rep = run_parity(run_dir, artifacts_dir=art_dir, progress=progress_bars(progress), fix=True, promote=True)
    print_table(rep)
    print_triage(rep)
    if rep.e2e:
        info(f"      end-to-end: {rep.e2e['verdict']}")
    files = f"{rep.files.get('markdown')}  ({', '.join(p.name for p in rep.files.values())})"
    return report_mod.failure_lines(rep), files, list(rep.promoted)


def _child_main(conn, fn, args: tuple) -> None:
    """In the stage's process: run it, send ("ok", result, peak RSS KB) or ("error", exception, peak RSS KB)."""
    import os
    import resource

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        out: tuple = ("ok", fn(*args))
    except Exception as exc:  # noqa: BLE001 - handed to the parent, which raises it as the demo's error
        out = ("error", exc)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        conn.send((*out, peak_kb))
    except Exception:  # noqa: BLE001 - an exception that does not pickle goes as its text
        from edgeproof.errors import EdgeproofError

        conn.send(("error", EdgeproofError(str(out[1])), peak_kb))
    conn.close()


def _in_child(stage: str, fn, *args, peaks: dict[str, float]):
    """fn(*args) in a fresh process, so that one stage's libraries (TensorFlow's graphs, the converters, every
    runtime) are never resident together: the demo's peak is its largest stage's, not their sum (one process:
    2.7 GB on a fresh clone)."""
    import multiprocessing

    from edgeproof.errors import EdgeproofError

    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child_main, args=(child, fn, args), name=f"edgeproof-demo-{stage}")
    proc.start()
    child.close()
    try:
        got = parent.recv()
    except EOFError:
        got = None
    proc.join()
    if got is None:
        raise EdgeproofError(f"demo: the {stage} stage's process ended without a result (exit code {proc.exitcode}); "
                             f"run 'edgeproof {stage}' alone to see why")
    status, value, peak_kb = got
    peaks[stage] = peak_kb / 1024
    if status == "error":
        raise value
    return value


def peak_rss_mb(peaks: dict[str, float]) -> tuple[float, str]:
    """The demo's peak resident memory (MiB) and where: its largest stage process, or this process itself."""
    import resource

    peaks = {**peaks, "demo": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    where = max(peaks, key=peaks.__getitem__)
    return peaks[where], where


def run(args: argparse.Namespace) -> int:
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from edgeproof.cli.console import error_line, info

    progress = not args.no_progress
    cfg = FAST if args.fast else FULL
    out = Path(args.out)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    peaks: dict[str, float] = {}

    t = _stage(1, f"dataset '{args.dataset}' ({cfg['image_size']}px, {cfg['per_class']} images/class)")
    from edgeproof.train.datasets import build_dataset

    data = build_dataset(args.dataset, image_size=cfg["image_size"], per_class=cfg["per_class"])
    timings["dataset"] = time.perf_counter() - t
    info(f"      {data}")

    t = _stage(2, f"train tiny_cnn, {cfg['epochs']} epochs -> {out}")
    run_dir = Path(_in_child("train", _train_stage, data, out, cfg, progress, peaks=peaks))
    timings["train"] = time.perf_counter() - t

    t = _stage(3, "convert to every format")
    art_dir = run_dir / "artifacts"
    artifacts, held = _in_child("convert", _convert_stage, run_dir, art_dir, progress, peaks=peaks)
    timings["convert"] = time.perf_counter() - t
    failed = [a for a in artifacts if a[1] != "ok" and not a[4]]  # no file: not converted
    for fmt, status, size, error, _written in artifacts:
        info(f"      {fmt:15s} {status:6s} {size / 1024:8.1f} KiB  {error}")
    for line in held:
        info(f"      held-out gate: {line}")

    t = _stage(4, "parity: every artifact × backend vs the Keras model")
    failures, report_files, promoted = _in_child("parity", _parity_stage, run_dir, art_dir, progress, peaks=peaks)
    timings["parity"] = time.perf_counter() - t

    t = _stage(5, "runtime (no TensorFlow) on sample test images")
    _sample_predictions(run_dir, art_dir, promoted)
    timings["runtime"] = time.perf_counter() - t

    total = time.perf_counter() - t0
    peak, where = peak_rss_mb(peaks)
    info("")
    info(f"run folder : {run_dir}")
    info(f"artifacts  : {art_dir}  (manifest.json inside)")
    info(f"report     : {report_files}")
    info("time       : " + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()) + f", total {total:.0f}s wall")
    info(f"peak memory: {peak:.0f} MiB resident ({where}); per stage: "
         + ", ".join(f"{k} {v:.0f} MiB" for k, v in peaks.items()))
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
