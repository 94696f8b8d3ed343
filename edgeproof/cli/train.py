"""`edgeproof train`: train a classifier on an image folder or an embedded dataset -> a run folder."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from edgeproof.train.datasets import DATASETS  # registries: no heavy imports at module level
    from edgeproof.train.distributed import DEFAULT_TIMEOUT
    from edgeproof.train.models import MODELS
    from edgeproof.train.trainer import DEFAULT_EPOCHS, DEFAULT_IMG_SIZE, DEFAULT_THREADS

    p = sub.add_parser(
        "train", help="train an image classifier and write a run folder",
        description="Train a small CNN on a folder of class subfolders (optionally split into train/ val/ "
        "test/) or on an embedded dataset, and write a run folder: model.keras, labels.txt, preprocess.json, "
        "split.json, metrics.json, history.csv, training.png, confusion.png. The folder appears only when complete "
        "(an existing run there is replaced in one step); after every epoch a checkpoint is kept in .NAME.partial/ "
        "next to it, so a killed run continues with --resume (a run without --resume starts over and replaces "
        "that checkpoint with its own after its first epoch).",
        epilog="examples:\n  edgeproof train                                  # real-photo textures dataset\n"
        "  edgeproof train --dataset shapes --epochs 3 -o runs/x\n"
        "  edgeproof train --dataset shapes --epochs 3 -o runs/x --resume   # after a kill or power cut\n"
        "  edgeproof train --data photos/ --model mobilenet_v2_tiny --alpha 0.5 --img-size 96\n"
        "  edgeproof train --data photos/ --model mobilenet_v3_small --weights imagenet --img-size 96\n"
        "  edgeproof train --data photos/ --model efficientnet_b0 --weights backbone.weights.h5\n"
        "  edgeproof train --dataset shapes --workers 2 -o runs/x        # 2 local workers (tf.distribute)\n"
        "  edgeproof train --data /shared/photos --cluster cluster.json --task-index 1   # one machine of a cluster\n"
        "multi-worker training: docs/scale-out.md",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data", metavar="DIR",
                     help="image folder: one subfolder per class (or train/ val/ test/)")
    src.add_argument("--dataset", choices=list(DATASETS), help="embedded dataset, built under "
                     "$EDGEPROOF_CACHE/datasets (default: textures, real-photo crops)")
    p.add_argument("--model", choices=list(MODELS), default="tiny_cnn", metavar="NAME",
                   help=f"architecture (default: tiny_cnn): {', '.join(MODELS)} — the small CNNs or a "
                   "keras.applications backbone with its preprocessing inside the model")
    p.add_argument("--weights", default="none", metavar="imagenet|none|FILE",
                   help="backbone start: ImageNet weights (downloaded by Keras: needs the network), none (from "
                   "scratch, the default), or a weights file of the backbone without its top. Pretrained: the "
                   "backbone is frozen while the head trains, then its top layers are fine-tuned at lr/10")
    p.add_argument("--alpha", type=float, default=1.0, help="width multiplier (default: 1.0)")
    p.add_argument("--img-size", type=int, default=DEFAULT_IMG_SIZE, metavar="N",
                   help=f"square input size in pixels (default: {DEFAULT_IMG_SIZE})")
    p.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS,
                   help=f"maximum epochs; early stopping on val loss (default: {DEFAULT_EPOCHS})")
    p.add_argument("--patience", type=int, default=3, help="early-stopping patience in epochs (default: 3)")
    p.add_argument("--batch-size", type=int, default=32, help="batch size (default: 32)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default: 1e-3)")
    p.add_argument("--seed", type=int, default=0,
                   help="random seed for split, init and augmentation (default: 0)")
    p.add_argument("--threads", type=int, default=DEFAULT_THREADS, metavar="N",
                   help=f"TensorFlow CPU threads while training (default: {DEFAULT_THREADS}); the weights depend on "
                   "it, so a fixed count gives the same weights on any number of cores; 0: one per core")
    p.add_argument("--no-augment", action="store_true", help="train without flips/brightness/contrast jitter")
    p.add_argument("-o", "--out", metavar="DIR", help="run folder (default: runs/<dataset>-<model>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted run for -o from its last per-epoch checkpoint (kept in "
                   ".NAME.partial/ next to the run folder; same data and options required)")
    dist = p.add_argument_group("multi-worker training (MultiWorkerMirroredStrategy; docs/scale-out.md)")
    dist.add_argument("--workers", type=int, default=1, metavar="N",
                      help="training processes: start N local TensorFlow worker processes on 127.0.0.1 that train "
                      "one model together (default: 1, this process alone); --batch-size is the global batch, "
                      "split among them. (serve --workers: interpreter threads; run/parity --workers: Ray actors)")
    dist.add_argument("--cluster", metavar="FILE",
                      help="join a cluster described by a TF_CONFIG-style JSON file (TF_CONFIG in the environment "
                      "works too); run the same command on every machine")
    dist.add_argument("--task-index", type=int, metavar="I",
                      help="this machine's index in the cluster file's worker list (when the file has no \"task\")")
    dist.add_argument("--worker-timeout", type=float, default=DEFAULT_TIMEOUT, metavar="S",
                      help=f"seconds to wait for the cluster to assemble and for any one collective step "
                      f"(default: {DEFAULT_TIMEOUT:g})")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os

    from edgeproof.cli import console

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow's first import: no C++ log noise
    import importlib.util

    from edgeproof.errors import MissingDependency

    if importlib.util.find_spec("tensorflow") is None:  # the hint now; the (slow) import after the input checks
        raise MissingDependency("tensorflow", "train", "edgeproof train")
    from edgeproof.train.trainer import TrainConfig, train

    if args.data:
        data_dir = Path(args.data)
        source = data_dir.resolve().name or "data"
    else:
        from edgeproof.train.datasets import DATASETS, build_dataset

        name = args.dataset or "textures"
        # The embedded datasets are stored at their default size unless another is asked for.
        size = None if args.img_size == DATASETS[name].image_size else args.img_size
        data_dir = build_dataset(name, image_size=size)
        source = name
    out = Path(args.out) if args.out else Path("runs") / f"{source}-{args.model}"
    cfg = TrainConfig(data_dir=data_dir, out_dir=out, model=args.model, img_size=args.img_size,
                      epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                      alpha=args.alpha, patience=args.patience, augment=not args.no_augment,
                      weights=args.weights, threads=args.threads)
    if args.workers != 1:
        return _launch(args, cfg)
    from edgeproof.train.distributed import WorkerLost, resolve_topology

    topo = resolve_topology(args.cluster, args.task_index)
    try:
        run_path = train(cfg, progress=console.progress_bars(not args.no_progress), resume=args.resume,
                         topology=topo, timeout=args.worker_timeout)
    except WorkerLost as exc:
        launched = os.environ.get("EDGEPROOF_LAUNCH_DIR")
        if not launched:
            raise
        from edgeproof.train.launch import ERROR_FILE

        Path(launched, ERROR_FILE.format(rank=topo.rank)).write_text(str(exc) + "\n")  # the launcher says it
        return exc.exit_code
    if not topo.is_chief:
        if not os.environ.get("EDGEPROOF_LAUNCH_DIR"):
            console.info(f"worker {topo.rank} of {topo.count}: done; the chief ({topo.workers[0]}) wrote the run "
                         "folder")
        return 0
    summary = _summary(run_path)
    if args.json:
        console.print_json(summary)
    else:
        acc = summary["accuracy"]
        workers = f" on {topo.count} workers" if topo.count > 1 else ""
        console.info(
            f"[bold green]trained[/] {console.safe(summary['model'])} on {console.safe(summary['data_root'])}"
            f"{workers}: accuracy train "
            f"{_pct(acc['train'])} / val {_pct(acc['val'])} / test {_pct(acc['test'])}, "
            f"{summary['epochs_run']} epochs (best {summary['best_epoch']}), "
            f"{summary['seconds']['total']:.1f} s", markup=True)
        console.info(f"run folder: {run_path}")
    return 0


def _launch(args: argparse.Namespace, cfg) -> int:
    """--workers N: check the input once here, then start N local workers (train/launch.py)."""
    import os

    from edgeproof.errors import UsageError
    from edgeproof.train.checkpoint import Checkpoints, partial_dir
    from edgeproof.train.data import scan
    from edgeproof.train.distributed import WorkerLost
    from edgeproof.train.launch import launch_local
    from edgeproof.train.trainer import check_out_dir

    if args.workers < 1:
        raise UsageError(f"--workers {args.workers}: use 1 or more")
    if args.cluster or os.environ.get("TF_CONFIG", "").strip():
        raise UsageError("--workers starts a local cluster; it cannot be combined with --cluster or TF_CONFIG "
                         "(unset TF_CONFIG, or drop --workers to join that cluster)")
    cfg.validate(args.workers)
    scan(cfg.data_dir)
    out = Path(cfg.out_dir)
    check_out_dir(out)
    argv = ["train", "--data", str(Path(cfg.data_dir).resolve()), "--model", cfg.model, "--alpha", repr(cfg.alpha),
            "--img-size", str(cfg.img_size), "--epochs", str(cfg.epochs), "--patience", str(cfg.patience),
            "--batch-size", str(cfg.batch_size), "--lr", repr(cfg.lr), "--seed", str(cfg.seed),
            "-o", str(out.absolute()), "--worker-timeout", repr(args.worker_timeout),
            "--weights", cfg.weights if cfg.weights in ("imagenet", "none") else str(Path(cfg.weights).resolve())]
    argv += [flag for flag, on in (("--no-augment", not cfg.augment), ("--resume", args.resume),
                                   ("--json", args.json), ("--no-progress", args.no_progress)) if on]

    def resume_hint() -> str:
        try:
            state = Checkpoints(out).load()
        except UsageError:
            state = None
        if state is None:
            return f"'{out}' is as before this run; run the command again"
        return (f"'{out}' is as before this run; add --resume to continue after epoch {state.epoch} (checkpoint "
                f"in '{partial_dir(out)}')")

    result = launch_local(argv, args.workers, resume_hint)
    if result.error:
        raise WorkerLost(result.error)
    return result.exit_code


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f} %"


def _summary(run_path: Path) -> dict:
    import json

    from edgeproof.train import run_dir

    m = json.loads((run_path / run_dir.METRICS_FILE).read_text())
    keys = ("model", "alpha", "img_size", "classes", "data_root", "accuracy", "counts", "epochs_run",
            "best_epoch", "params", "seconds")
    return {"run": str(run_path.resolve()), **{k: m[k] for k in keys},
            "skipped": {k: m["skipped"][k] for k in ("total", "by_reason")}}
