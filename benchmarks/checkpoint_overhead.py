"""Cost of train's per-epoch checkpoint (what makes `edgeproof train --resume` possible).

Trains the same configuration with and without checkpointing, interleaved (A B A B ...) so machine
noise hits both alike, and also times every Checkpoints.save call directly.

    python benchmarks/checkpoint_overhead.py                      # shapes 64 px, tiny_cnn, 6 epochs, 3 pairs
    python benchmarks/checkpoint_overhead.py --model mobilenet_v2_tiny --repeats 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="shapes")
    p.add_argument("--model", default="tiny_cnn")
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

    from edgeproof.train import checkpoint
    from edgeproof.train.datasets import DATASETS, build_dataset
    from edgeproof.train.trainer import TrainConfig, train

    size = None if args.img_size == DATASETS[args.dataset].image_size else args.img_size
    data = build_dataset(args.dataset, image_size=size)
    saves: list[float] = []
    original = checkpoint.Checkpoints.save

    def timed_save(self, *a, **k):
        t = time.perf_counter()
        original(self, *a, **k)
        saves.append(time.perf_counter() - t)

    checkpoint.Checkpoints.save = timed_save
    walls: dict[bool, list[float]] = {True: [], False: []}
    epochs_run = None
    with tempfile.TemporaryDirectory() as tmp:
        # patience == epochs: no early stop, every run trains every epoch
        cfg = dict(data_dir=data, model=args.model, img_size=args.img_size, epochs=args.epochs,
                   patience=args.epochs, seed=0)
        train(TrainConfig(out_dir=Path(tmp) / "warmup", **{**cfg, "epochs": 1}), progress=False)  # traces, caches
        for i in range(args.repeats):
            for ckpt in (True, False) if i % 2 == 0 else (False, True):
                t = time.perf_counter()
                out = train(TrainConfig(out_dir=Path(tmp) / f"r{i}{ckpt}", **cfg), progress=False, checkpoint=ckpt)
                walls[ckpt].append(time.perf_counter() - t)
                epochs_run = len((out / "history.csv").read_text().splitlines()) - 1
    on, off = statistics.median(walls[True]), statistics.median(walls[False])
    print(f"{args.model} on {args.dataset} {args.img_size} px, {epochs_run} epochs, {args.repeats} interleaved pairs")
    print(f"train wall time, median: with checkpoints {on:.2f} s, without {off:.2f} s, "
          f"overhead {on - off:+.2f} s ({100 * (on - off) / off:+.1f} %)")
    print(f"  with:    {', '.join(f'{w:.2f}' for w in walls[True])}")
    print(f"  without: {', '.join(f'{w:.2f}' for w in walls[False])}")
    print(f"Checkpoints.save: {len(saves)} calls, median {1000 * statistics.median(saves):.0f} ms, "
          f"max {1000 * max(saves):.0f} ms per epoch")


if __name__ == "__main__":
    main()
