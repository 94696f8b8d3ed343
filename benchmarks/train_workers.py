"""Training speed: 1 worker vs N local workers (and, optionally, another edgeproof tree as a baseline).

Each configuration is one `python -m edgeproof train` subprocess on the same data, run interleaved
(A B C A B C ...) so machine noise hits all alike. Reports the wall time, metrics.json's train seconds,
seconds per epoch and the ratios against the first configuration, and how far each configuration's
per-epoch history (loss, accuracy, val_loss, val_accuracy) is from the first one's (same seed). Patience is set above --epochs so
every run trains the same number of epochs.

    python benchmarks/train_workers.py                         # textures (the demo data), 6 epochs, 2 rounds
    python benchmarks/train_workers.py --workers 1 2 --epochs 4 --repeats 3
    python benchmarks/train_workers.py --baseline /tmp/old-pkg  # a PYTHONPATH holding an older edgeproof
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _run(label: str, workers: int, data: Path, out: Path, args: argparse.Namespace, pythonpath: str | None) -> dict:
    cmd = [sys.executable, "-m", "edgeproof", "train", "--data", str(data), "--img-size", str(args.img_size),
           "--epochs", str(args.epochs), "--patience", str(args.epochs + 1), "--batch-size", str(args.batch_size),
           "--model", args.model, "--no-progress", "-o", str(out)]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    t = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=out.parent)
    wall = time.perf_counter() - t
    m = json.loads((out / "metrics.json").read_text())
    history = [{k: float(v) for k, v in row.items()} for row in csv.DictReader((out / "history.csv").open())]
    return {"label": label, "wall": wall, "train": m["seconds"]["train"],
            "per_epoch": m["seconds"]["train"] / m["epochs_run"], "test_acc": m["accuracy"]["test"],
            "history": history}


def _max_diff(a: list[dict], b: list[dict], key: str) -> float:
    return max((abs(x[key] - y[key]) for x, y in zip(a, b)), default=float("nan"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="textures")
    p.add_argument("--model", default="tiny_cnn")
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--baseline", metavar="PYTHONPATH", help="also time the edgeproof found on this PYTHONPATH (1 worker)")
    args = p.parse_args()

    from edgeproof.train.datasets import DATASETS, build_dataset

    size = None if args.img_size == DATASETS[args.dataset].image_size else args.img_size
    data = build_dataset(args.dataset, image_size=size)
    configs = ([("baseline 1 worker", 1, args.baseline)] if args.baseline else [])
    configs += [(f"{w} worker{'s' if w > 1 else ''}", w, None) for w in args.workers]
    results: dict[str, list[dict]] = {c[0]: [] for c in configs}
    with tempfile.TemporaryDirectory(prefix="edgeproof-bench-") as tmp:
        for r in range(args.repeats):
            for label, workers, pythonpath in configs:
                out = Path(tmp) / f"{label.replace(' ', '_')}-{r}"
                results[label].append(_run(label, workers, data, out, args, pythonpath))
    first = configs[0][0]
    ref = statistics.median(x["per_epoch"] for x in results[first])
    print(f"{args.dataset} {args.img_size}px, {args.model}, batch {args.batch_size}, {args.epochs} epochs, "
          f"{args.repeats} interleaved rounds, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    print("| configuration | wall s (median) | train s | s/epoch | speed vs first | test acc | max per-epoch "
          "|d| vs first: loss / val_loss / acc / val_acc |")
    print("|---|---|---|---|---|---|---|")
    base = results[first][0]["history"]
    for label, runs in results.items():
        med = {k: statistics.median(x[k] for x in runs) for k in ("wall", "train", "per_epoch", "test_acc")}
        diffs = " / ".join(f"{max(_max_diff(base, r['history'], k) for r in runs):.2g}"
                           for k in ("loss", "val_loss", "accuracy", "val_accuracy"))
        print(f"| {label} | {med['wall']:.1f} | {med['train']:.1f} | {med['per_epoch']:.2f} | "
              f"{ref / med['per_epoch']:.2f}x | {med['test_acc']:.3f} | {diffs} |")


if __name__ == "__main__":
    main()
