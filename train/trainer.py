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
    EarlyStop,
    State,
    config_differences,
    data_differences,
    data_fingerprint,
    epoch_seed,
    partial_dir,
    resume_config,
)

log = logging.getLogger(__name__)

DEFAULT_EPOCHS = 12
# Training images used to re-estimate the BatchNorm statistics after each epoch; EarlyStopping then
# restores the best epoch's weights and statistics together, so the saved model is the one validated.
EPOCH_RECALIBRATION = 512
DEFAULT_IMG_SIZE = 64


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

    def validate(self) -> None:
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
            (0.1 <= float(self.alpha) <= 4.0, f"--alpha {self.alpha}: use 0.1..4.0"),
            (self.interpolation in INTERPOLATIONS,
             f"interpolation '{self.interpolation}': valid: {', '.join(INTERPOLATIONS)}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise UsageError(msg)
        from edgeproof.train.models import check_weights

        check_weights(self.model, self.weights)  # before the data is read: a bad --weights fails at once


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


def _determinism_enabled() -> bool:
    try:  # not exported under tf.config in TF 2.21
        from tensorflow.python.framework.config import is_op_determinism_enabled

        return bool(is_op_determinism_enabled())
    except ImportError:  # pragma: no cover
        return False


def _disable_determinism() -> None:
    try:
        from tensorflow.python.framework.config import disable_op_determinism

        disable_op_determinism()
    except ImportError:  # pragma: no cover
        pass


def _predictor(model, size: int):
    """A traced-once inference function over uint8/float batches (model.predict retraces per shape)."""
    import tensorflow as tf

    fn = tf.function(lambda x: model(x, training=False),
                     input_signature=[tf.TensorSpec((None, size, size, 3), tf.float32)])

    def predict(images: np.ndarray) -> np.ndarray:
        outs = [fn(tf.constant(images[i:i + 256], tf.float32)).numpy() for i in range(0, len(images), 256)]
        return np.concatenate(outs) if outs else np.zeros((0, model.output_shape[-1]), np.float32)

    return predict


def _validation_callback(keras, predict, train_images, val_images, val_labels, seed: int):
    """At each epoch end: recalibrate BatchNorm statistics, then put val_loss/val_accuracy in the logs.

    Runs before EarlyStopping (which then restores the best weights, statistics included) and
    before History. Recalibrating never changes training itself, which uses batch statistics.
    """
    from edgeproof.train.models import recalibrate_batchnorm

    class Validate(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            recalibrate_batchnorm(self.model, train_images, max_images=EPOCH_RECALIBRATION, seed=seed)
            probs = predict(val_images)
            p_true = np.clip(probs[np.arange(len(val_labels)), val_labels], 1e-7, 1.0)
            if logs is not None:
                logs["val_loss"] = float(-np.log(p_true).mean())
                logs["val_accuracy"] = float((probs.argmax(axis=1) == val_labels).mean())

    return Validate()


def _progress_callback(keras, prog, epochs: int, steps: int, start: int):
    """One bar over every epoch (a resumed run starts it at its first new epoch); fit runs per epoch."""
    task = prog.add_task(f"training epoch {start + 1}/{epochs}", total=epochs * steps, completed=start * steps)

    class EpochProgress(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            prog.advance(task)

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            prog.update(task, completed=(epoch + 1) * steps, description=(
                f"epoch {epoch + 1}/{epochs} loss {logs.get('loss', 0):.3f} "
                f"acc {logs.get('accuracy', 0):.3f} "
                f"val_loss {logs.get('val_loss', 0):.3f} val_acc {logs.get('val_accuracy', 0):.3f}"))

        def finish(self) -> None:
            prog.update(task, total=prog.completed(task))

    return EpochProgress()


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
          checkpoint: bool = True) -> Path:
    """Train per `cfg` and write a complete run folder at cfg.out_dir; return its path.

    After every epoch a checkpoint is committed next to the destination (see train.checkpoint) unless
    `checkpoint` is False; `resume` continues from it. The checkpoint is removed once the run folder is
    in place. `progress`: a callback for progress events (edgeproof.progress).
    """
    from edgeproof.atomic import clean_stale
    from edgeproof.train.data import scan

    cfg.validate()
    out = Path(cfg.out_dir)
    scanned = scan(cfg.data_dir)  # bad data fails here: before TensorFlow's import and any progress bar
    check_out_dir(out)
    for line in clean_stale(out.parent, out.name):  # temp folders of a killed earlier run
        log.info("note: %s", line)
    try:
        with Checkpoints(out) as ckpts:
            try:
                state = _resume_state(ckpts, cfg, resume)
                _train(cfg, out, scanned, ckpts, state, progress, checkpoint)
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


def _train(cfg: TrainConfig, out: Path, scanned: tuple, ckpts: Checkpoints, state: State | None,
           progress: ProgressCallback | bool | None, save: bool) -> None:
    from edgeproof.train.data import load_data, make_tf_dataset
    from edgeproof.train.tf_quiet import import_tensorflow

    import_tensorflow("edgeproof train")
    import keras
    import tensorflow as tf

    from edgeproof.train import report
    from edgeproof.train.models import build_model, in_graph_preprocess, phase_at, set_trainable, transfer_plan

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
    if data.skipped:
        summary = ", ".join(f"{n} {r}" for r, n in data.skipped_summary().items())
        log.warning(f"skipped {len(data.skipped)} file(s) that are not usable images: {summary} "
                     f"(list in {run_dir.SPLIT_FILE} and {run_dir.METRICS_FILE})")
    t_load = time.perf_counter() - t0

    seed = int(cfg.seed)
    keras.utils.set_random_seed(seed)
    was_deterministic = _determinism_enabled()
    if cfg.deterministic and not was_deterministic:
        tf.config.experimental.enable_op_determinism()
    try:
        if state is None:
            model = build_model(cfg.model, size, len(data.classes), float(cfg.alpha), cfg.weights)
            model.compile(optimizer=keras.optimizers.Adam(float(cfg.lr)),
                          loss="sparse_categorical_crossentropy", metrics=["accuracy"])
            state = State(epoch=0, history={}, early=EarlyStop(int(cfg.patience)), config=resume_config(cfg),
                          data=fingerprint)
            best_weights = None
        else:  # the model with its optimizer state, as it was after the checkpoint's epoch
            model = keras.saving.load_model(str(ckpts.model_path(state)), compile=True)
            best_weights = ckpts.best_weights(state)
            log.info(f"resuming '{out}' after epoch {state.epoch}/{cfg.epochs}")
        resumed_at = state.epoch
        tr, va = data.splits["train"], data.splits["val"]
        train_images = tf.constant(tr.images)  # one copy for every epoch's dataset
        predict = _predictor(model, size)
        steps = max(1, len(tr.labels) // int(cfg.batch_size))  # full batches only
        validate = _validation_callback(keras, predict, tr.images, va.images, va.labels, seed)
        t1 = time.perf_counter() - state.train_seconds
        with Progress(progress) as prog:
            bar = _progress_callback(keras, prog, int(cfg.epochs), steps, state.epoch)
            plan, applied = transfer_plan(cfg.model, cfg.weights, int(cfg.epochs), float(cfg.lr)), None
            for epoch in range(state.epoch, int(cfg.epochs)):
                if state.early.stopped:
                    break
                if len(plan) > 1 and phase_at(plan, epoch) != applied:  # transfer learning: frozen, then fine-tune
                    applied = phase_at(plan, epoch)
                    set_trainable(model, applied)
                    model.compile(optimizer=keras.optimizers.Adam(applied.lr),
                                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
                # Each epoch's shuffle and augmentation depend on (seed, epoch) only: resumable exactly.
                ds = make_tf_dataset(train_images, tr.labels, int(cfg.batch_size), augment=cfg.augment,
                                     seed=epoch_seed(seed, epoch))
                hist = model.fit(ds, initial_epoch=epoch, epochs=epoch + 1, verbose=0, shuffle=False,
                                 callbacks=[validate, bar])
                for k, vals in hist.history.items():
                    state.history.setdefault(k, []).extend(float(v) for v in vals)
                improved = state.early.update(epoch, state.history["val_loss"][-1])
                if improved:
                    best_weights = model.get_weights()
                state.epoch, state.train_seconds = epoch + 1, time.perf_counter() - t1
                if save:
                    ckpts.save(model, state, best_weights if improved else None)
            bar.finish()
        if best_weights is not None:  # EarlyStopping(restore_best_weights=True) does this at train end
            model.set_weights(best_weights)
        t_train = time.perf_counter() - t1
        history = state.history
        val_losses = history.get("val_loss") or [0.0]
        best_epoch = int(np.argmin(val_losses)) + 1

        t2 = time.perf_counter()
        splits = {}
        for name, split in data.splits.items():
            probs = predict(split.images)
            splits[name] = report.split_metrics(split.labels, probs, data.classes)
        t_eval = time.perf_counter() - t2
    finally:
        if cfg.deterministic and not was_deterministic:
            _disable_determinism()

    metrics: dict[str, Any] = {
        "model": cfg.model, "alpha": float(cfg.alpha), "img_size": size, "classes": data.classes,
        "data_root": str(Path(cfg.data_dir).resolve()), "layout": data.layout, "seed": seed,
        "epochs_requested": int(cfg.epochs), "epochs_run": len(val_losses), "best_epoch": best_epoch,
        "resumed_after_epoch": resumed_at or None,
        "params": int(model.count_params()),
        "accuracy": {k: v["accuracy"] for k, v in splits.items()},
        "counts": {k: v["count"] for k, v in splits.items()},
        "splits": splits,
        "skipped": {"total": len(data.skipped), "by_reason": data.skipped_summary(),
                    "files": [[p, r] for p, r in data.skipped]},
        "seconds": {"load": round(t_load, 2), "train": round(t_train, 2), "evaluate": round(t_eval, 2)},
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
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
