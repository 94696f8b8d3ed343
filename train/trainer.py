"""The training loop: data -> model -> fit (Adam, early stopping, best weights) -> run folder.

Everything is written into a hidden temp folder next to the destination and swapped in at the end,
so an interrupted or failed run never leaves a folder that looks complete, and an existing
complete run at the destination survives a failure. After every epoch a checkpoint is committed
next to the destination (train.checkpoint), so `edgeproof train --resume` continues a killed run;
each epoch's shuffle and augmentation are seeded from (seed, epoch), so the resumed run feeds the
same batches as an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeproof.atomic import no_space, temp_dir_beside
from edgeproof.contract import INTERPOLATIONS, Preprocess
from edgeproof.errors import EdgeproofError, UsageError
from edgeproof.progress import Progress, ProgressCallback
from edgeproof.train import run_dir
from edgeproof.train.checkpoint import (
    STATE_FILE,
    Checkpoints,
    State,
    config_differences,
    data_differences,
    data_fingerprint,
    partial_dir,
    resume_config,
)
from edgeproof.train.distributed import DEFAULT_TIMEOUT, Topology
from edgeproof.train.loop import Phase
from edgeproof.train.session import Session

log = logging.getLogger(__name__)

DEFAULT_EPOCHS = 12
DEFAULT_IMG_SIZE = 64
# TensorFlow's CPU kernels (oneDNN's convolutions and reductions) split their work by the thread count, so the
# trained weights depend on it even with op determinism: the same seed gave weights up to 0.18 apart on 1 and on
# 2 cores. Training pins it (intra- and inter-op) so a run is bitwise reproducible on any core count; 0 leaves
# TensorFlow's default (one thread per schedulable core: then the weights follow the machine's core count).
DEFAULT_THREADS = 2


@dataclass
class TrainConfig:
    data_dir: str | Path
    out_dir: str | Path
    model: str = "tiny_cnn"
    img_size: int = DEFAULT_IMG_SIZE
    epochs: int = DEFAULT_EPOCHS
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 0
    alpha: float = 1.0  # width multiplier
    weights: str = "none"  # backbones: "imagenet", "none" or a weights file (models.transfer_plan)
    patience: int = 3  # early stopping: epochs without val-loss improvement
    augment: bool = True
    interpolation: str = "bilinear"
    deterministic: bool = True  # tf.config.experimental.enable_op_determinism during training
    threads: int = DEFAULT_THREADS  # TensorFlow intra/inter-op threads while training (0: every core); see above
    # Training phases (transfer learning: frozen backbone, then fine-tuning); empty: one phase of
    # `epochs` at `lr` training every layer. Their epochs must add up to `epochs`. See train.loop.Phase.
    phases: tuple[Phase, ...] = ()

    def schedule(self) -> tuple[Phase, ...]:
        """The phases this run trains through: `phases` when given, else the model's transfer plan
        (models.transfer_plan: one phase, or a pretrained backbone frozen, then its top fine-tuned)."""
        if self.phases:
            return tuple(self.phases)
        from edgeproof.train.models import transfer_plan

        return transfer_plan(self.model, self.weights, int(self.epochs), float(self.lr))

    def validate(self, workers: int = 1) -> None:
        from edgeproof.train.models import MAX_SIZE, MIN_SIZE, MODELS

        if self.model not in MODELS:
            raise UsageError(f"unknown model '{self.model}'; valid: {', '.join(MODELS)}")
        checks = [
            (MIN_SIZE <= int(self.img_size) <= MAX_SIZE,
             f"--img-size {self.img_size}: use {MIN_SIZE}..{MAX_SIZE}"),
            (int(self.epochs) >= 1, f"--epochs {self.epochs}: use 1 or more"),
            (int(self.batch_size) >= 1, f"--batch-size {self.batch_size}: use 1 or more"),
            (0 < float(self.lr) < 10, f"--lr {self.lr}: use a positive learning rate such as 1e-3"),
            (int(self.patience) >= 0, f"patience {self.patience}: use 0 or more"),
            (0 <= int(self.seed) < 2**32, f"--seed {self.seed}: use 0..4294967295"),
            (0 <= int(self.threads) <= 1024, f"--threads {self.threads}: use 0 (every core) or 1..1024"),
            (0.1 <= float(self.alpha) <= 4.0, f"--alpha {self.alpha}: use 0.1..4.0"),
            (self.interpolation in INTERPOLATIONS,
             f"interpolation '{self.interpolation}': valid: {', '.join(INTERPOLATIONS)}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise UsageError(msg)
        from edgeproof.train.models import check_weights

        check_weights(self.model, self.weights)  # before the data is read: a bad --weights fails at once
        if int(self.batch_size) % workers:
            raise UsageError(f"--batch-size {self.batch_size} does not split evenly over {workers} workers (the "
                             f"global batch is divided among them); use a multiple of {workers}")
        _check_phases(self.phases, int(self.epochs))


def _check_phases(phases: tuple[Phase, ...], epochs: int) -> None:
    import re

    if not phases:
        return
    for i, p in enumerate(phases, start=1):
        if int(p.epochs) < 1 or not 0 < float(p.lr) < 10:
            raise UsageError(f"phase {i}: {p.epochs} epochs at lr {p.lr}; use 1 or more epochs and a positive "
                             "learning rate")
        try:
            re.compile(p.trainable or "")
        except re.error as exc:
            raise UsageError(f"phase {i}: trainable '{p.trainable}' is not a valid regular expression ({exc})") from None
    total = sum(int(p.epochs) for p in phases)
    if total != epochs:
        raise UsageError(f"the phases add up to {total} epochs but epochs is {epochs}; make them equal")


def check_out_dir(out: Path) -> None:
    """Refuse to replace anything but an edgeproof run folder (or an empty folder), or to train for
    minutes into a place that cannot be written."""
    if out.name in ("", ".", ".."):  # '.', '..', '/': the run folder is swapped in by renaming it
        raise UsageError(f"-o '{out}' names an existing folder by '.', '..' or '/'; give a run folder path "
                         "such as runs/x (it is created)")
    if out.exists():
        if not out.is_dir():
            raise UsageError(f"output '{out}' exists and is a file; give a folder path with -o")
        entries = [p.name for p in out.iterdir()]
        ours = {run_dir.MODEL_FILE, run_dir.LABELS_FILE, run_dir.PREPROCESS_FILE, run_dir.METRICS_FILE}
        if entries and not ours & set(entries):
            raise UsageError(f"output folder '{out}' exists and is not an edgeproof run folder; "
                             "choose another -o or empty it")
    blocker = next((a for a in out.parents if a.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise UsageError(f"cannot write the run folder '{out}': '{blocker}' is a file; give a folder path with -o")
    try:  # the run is written as a temp folder next to `out`, then renamed onto it
        out.parent.mkdir(parents=True, exist_ok=True)
        os.rmdir(temp_dir_beside(out, "probe"))
    except OSError as exc:
        raise UsageError(f"cannot write the run folder '{out}': {exc.strerror or exc} at '{out.parent}'; "
                         "give a writable path with -o") from None


def determinism_enabled() -> bool:
    """Whether TensorFlow's op determinism is on in this process (so a caller that turns it on can restore it)."""
    try:  # not exported under tf.config in TF 2.21
        from tensorflow.python.framework.config import is_op_determinism_enabled

        return bool(is_op_determinism_enabled())
    except ImportError:  # pragma: no cover
        return False


def disable_determinism() -> None:
    """Turn TensorFlow's op determinism off again (after `tf.config.experimental.enable_op_determinism()`)."""
    try:
        from tensorflow.python.framework.config import disable_op_determinism

        disable_op_determinism()
    except ImportError:  # pragma: no cover
        pass


def pin_threads(threads: int) -> int:
    """Set TensorFlow's intra- and inter-op thread counts to `threads` (0: leave them); return the intra-op count
    in effect (0: TensorFlow's default, one per core). Once TensorFlow has run an op in this process the counts
    are fixed: a different count then is logged, because the weights follow it."""
    import tensorflow as tf

    threading = tf.config.threading
    if threads > 0:
        try:
            threading.set_intra_op_parallelism_threads(threads)
            threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:  # "cannot be modified after initialization"
            if threading.get_intra_op_parallelism_threads() != threads:
                log.warning(f"TensorFlow already runs in this process with its own thread count, not {threads}: "
                            "these weights are reproducible only in a process that starts the same way "
                            "(the 'edgeproof train' command pins the count before TensorFlow starts)")
    return int(threading.get_intra_op_parallelism_threads())


def _resume_state(ckpts: Checkpoints, cfg: TrainConfig, resume: bool) -> State | None:
    """The checkpoint to continue from (--resume), after checking it was made with the same options."""
    if not resume:
        try:
            stale = ckpts.load()
        except UsageError:
            stale = None
        if stale is not None:
            log.warning(f"'{ckpts.dir}' holds a checkpoint of an interrupted run (epoch {stale.epoch}/"
                         f"{stale.config.get('epochs')}); this fresh run replaces it after its first epoch "
                         "(stop now and add --resume to continue that run instead)")
        return None
    state = ckpts.load()
    if state is None:
        raise UsageError(f"--resume: no checkpoint to resume for '{ckpts.out}' (looked for "
                         f"'{ckpts.dir / STATE_FILE}'); train without --resume")
    diffs = config_differences(state.config, resume_config(cfg))
    if diffs:
        raise UsageError(f"--resume: the checkpoint in '{ckpts.dir}' was trained with other options: "
                         f"{'; '.join(diffs)}; give the same options, or train without --resume to start over")
    return state


def train(cfg: TrainConfig, progress: ProgressCallback | bool | None = None, resume: bool = False,
          checkpoint: bool = True, topology: Topology | None = None, timeout: float = DEFAULT_TIMEOUT) -> Path:
    """Train per `cfg` and write a complete run folder at cfg.out_dir; return its path.

    After every epoch a checkpoint is committed next to the destination (see train.checkpoint) unless
    `checkpoint` is False; `resume` continues from it. The checkpoint is removed once the run folder is
    in place. `progress`: a callback for progress events (edgeproof.progress). With a multi-worker `topology` (train.distributed) every worker calls this; only the
    chief touches cfg.out_dir and its checkpoint, the others write nothing.
    """
    from edgeproof.atomic import clean_stale
    from edgeproof.train.data import scan

    topo = topology or Topology()
    cfg.validate(topo.count)
    out = Path(cfg.out_dir)
    scanned = scan(cfg.data_dir)  # bad data fails here: before TensorFlow's import and any progress bar
    if not topo.is_chief:
        _train(cfg, out, scanned, None, None, False, False, topo, timeout)
        return out
    check_out_dir(out)
    for line in clean_stale(out.parent, out.name):  # temp folders of a killed earlier run
        log.info("note: %s", line)
    try:
        with Checkpoints(out) as ckpts:
            try:
                state = _resume_state(ckpts, cfg, resume)
                _train(cfg, out, scanned, ckpts, state, progress, checkpoint, topo, timeout)
            except BaseException:
                ckpts.remove_if_empty()  # a committed checkpoint stays for --resume
                raise
            ckpts.remove()
    except Exception as exc:
        if not no_space(exc):
            raise
        raise _no_space_error(out, exc) from None
    return out


def _no_space_error(out: Path, exc: BaseException) -> EdgeproofError:
    """One line for a full disk: where, that the earlier run is intact, and how to go on."""
    try:
        done = Checkpoints(out).load()
    except (EdgeproofError, OSError):
        done = None
    then = (f"then add --resume to continue after epoch {done.epoch} (checkpoint in '{partial_dir(out)}')"
            if done else "then run it again")
    return EdgeproofError(f"no space left on the device ({getattr(exc, 'filename', None) or out.parent}); free some "
                          f"space or choose another -o, {then}; '{out}' is as before this run")


def _train(cfg: TrainConfig, out: Path, scanned: tuple, ckpts: Checkpoints | None, state: State | None,
           progress: ProgressCallback | bool | None, save: bool, topo: Topology, timeout: float) -> None:
    from edgeproof.train.data import load_data
    from edgeproof.train.tf_quiet import import_tensorflow

    import_tensorflow("edgeproof train")
    import keras
    import tensorflow as tf

    from edgeproof.train import report
    from edgeproof.train.distributed import make_strategy, stop_health_checks
    from edgeproof.train.models import in_graph_preprocess

    threads = pin_threads(int(cfg.threads))  # before TensorFlow runs an op: the weights depend on it
    t0 = time.perf_counter()
    size = int(cfg.img_size)
    pp = Preprocess(height=size, width=size, interpolation=cfg.interpolation,
                    in_graph=in_graph_preprocess(cfg.model))
    with Progress(progress) as prog:
        task: list = []  # the bar appears once the files are counted and the data passed its checks
        data = load_data(cfg.data_dir, pp, seed=int(cfg.seed), scanned=scanned,
                         on_total=lambda n: task.append(prog.add_task("reading images", total=n)),
                         on_done=lambda n: prog.advance(task[0], n))
    fingerprint = data_fingerprint(data)
    if state is not None:
        differs = data_differences(state.data, fingerprint)
        if differs:
            raise UsageError(f"--resume: the data in '{cfg.data_dir}' is not what the checkpoint was trained on: "
                             f"{differs}; train without --resume to start over")
    if data.skipped and topo.is_chief:
        summary = ", ".join(f"{n} {r}" for r, n in data.skipped_summary().items())
        log.warning(f"skipped {len(data.skipped)} file(s) that are not usable images: {summary} "
                     f"(list in {run_dir.SPLIT_FILE} and {run_dir.METRICS_FILE})")
    t_load = time.perf_counter() - t0

    strategy = make_strategy(topo, timeout)  # before any other TensorFlow work (a tf.distribute rule)
    seed = int(cfg.seed)
    keras.utils.set_random_seed(seed)
    was_deterministic = determinism_enabled()
    if cfg.deterministic and not was_deterministic:
        tf.config.experimental.enable_op_determinism()
    try:
        session = Session(cfg, strategy, topo, data, ckpts if save else None, progress)
        state = session.start(state, fingerprint, ckpts)
        resumed_at = state.epoch
        if state.epoch and topo.is_chief:
            log.info(f"resuming '{out}' after epoch {state.epoch}/{cfg.epochs}")
        session.fit(state)
        stop_health_checks(strategy)
        if not topo.is_chief:
            return
        model, history, t_train = session.model, state.history, session.seconds
        if session.best_weights is not None:  # EarlyStopping(restore_best_weights=True) does this at train end
            model.set_weights(session.best_weights)
        val_losses = history.get("val_loss") or [0.0]
        best_epoch = int(np.argmin(val_losses)) + 1

        t2 = time.perf_counter()
        splits = {}
        for name, split in data.splits.items():
            probs = session.predict(split.images)
            splits[name] = report.split_metrics(split.labels, probs, data.classes)
        t_eval = time.perf_counter() - t2
    finally:
        if cfg.deterministic and not was_deterministic:
            disable_determinism()

    metrics: dict[str, Any] = {
        "model": cfg.model, "alpha": float(cfg.alpha), "img_size": size, "classes": data.classes,
        "data_root": str(Path(cfg.data_dir).resolve()), "layout": data.layout, "seed": seed,
        "threads": threads or None, "epochs_requested": int(cfg.epochs), "epochs_run": len(val_losses), "best_epoch": best_epoch,
        "resumed_after_epoch": resumed_at or None,
        "params": int(model.count_params()),
        "accuracy": {k: v["accuracy"] for k, v in splits.items()},
        "counts": {k: v["count"] for k, v in splits.items()},
        "splits": splits,
        "skipped": {"total": len(data.skipped), "by_reason": data.skipped_summary(),
                    "files": [[p, r] for p, r in data.skipped]},
        "seconds": {"load": round(t_load, 2), "train": round(t_train, 2), "evaluate": round(t_eval, 2)},
        "distributed": {**topo.describe(), "global_batch": session.global_batch,
                        "per_worker_batch": session.global_batch // topo.count},
        "config": json.loads(json.dumps(asdict(cfg), default=str)),  # paths (and any phase's select) as text
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
    }
    _write_run(out, model, data, pp, metrics, history, best_epoch, seed, t0)


def _write_run(out: Path, model, data, pp: Preprocess, metrics: dict, history: dict, best_epoch: int,
               seed: int, t0: float) -> None:
    from edgeproof.atomic import fsync_dir, fsync_file, replace_dir, write_json, write_text
    from edgeproof.train import report
    from edgeproof.train.datasets import make_readable

    tmp = temp_dir_beside(out)
    try:
        write_text(tmp / run_dir.LABELS_FILE, "\n".join(data.classes) + "\n")
        write_json(tmp / run_dir.PREPROCESS_FILE, pp.to_dict())
        write_text(tmp / run_dir.SPLIT_FILE, json.dumps(data.split_json(seed)) + "\n")  # compact
        report.write_history_csv(tmp / run_dir.HISTORY_FILE, history)
        title = f"{metrics['model']} on {Path(metrics['data_root']).name}"
        report.plot_training(tmp / "training.png", history, best_epoch, title)
        test = metrics["splits"]["test"]
        report.plot_confusion(tmp / "confusion.png", test["confusion_matrix"], data.classes,
                              f"test confusion (accuracy {test['accuracy']})")
        model.save(tmp / run_dir.MODEL_FILE)  # the completeness marker: written last but metrics
        fsync_file(tmp / run_dir.MODEL_FILE)  # the other files are fsynced by their atomic writers
        metrics["seconds"]["total"] = round(time.perf_counter() - t0, 2)
        write_json(tmp / run_dir.METRICS_FILE, metrics)
        make_readable(tmp)
        run_dir.keep_foreign_entries(out, tmp)  # a user's files and convert's artifacts/ are never dropped
        fsync_dir(tmp)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
