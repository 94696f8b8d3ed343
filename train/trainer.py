"""The training loop: data -> model -> fit (Adam, early stopping, best weights) -> run folder.

Everything is written into a hidden temp folder next to the destination and swapped in at the end,
so an interrupted or failed run never leaves a folder that looks complete, and an existing
complete run at the destination survives a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeproof.contract import INTERPOLATIONS, Preprocess
from edgeproof.errors import UsageError
from edgeproof.train import run_dir

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
            (0.1 <= float(self.alpha) <= 4.0, f"--alpha {self.alpha}: use 0.1..4.0"),
            (self.interpolation in INTERPOLATIONS,
             f"interpolation '{self.interpolation}': valid: {', '.join(INTERPOLATIONS)}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise UsageError(msg)


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
        os.rmdir(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".probe", dir=out.parent))
    except OSError as exc:
        raise UsageError(f"cannot write the run folder '{out}': {exc.strerror or exc} at '{out.parent}'; "
                         "give a writable path with -o") from None


def _swap_in(tmp: Path, out: Path) -> None:
    """Rename the finished temp folder onto `out`, keeping the old one until the rename succeeded."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}-{int(time.time() * 1000)}"
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


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


def _progress_callback(keras, prog, epochs: int, steps: int):
    class RichProgress(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.task = prog.add_task(f"training epoch 1/{epochs}", total=epochs * steps)

        def on_train_batch_end(self, batch, logs=None):
            prog.advance(self.task)

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            prog.update(self.task, completed=(epoch + 1) * steps, description=(
                f"epoch {epoch + 1}/{epochs} loss {logs.get('loss', 0):.3f} "
                f"acc {logs.get('accuracy', 0):.3f} "
                f"val_loss {logs.get('val_loss', 0):.3f} val_acc {logs.get('val_accuracy', 0):.3f}"))

        def on_train_end(self, logs=None):
            prog.update(self.task, total=prog.tasks[self.task].completed)

    return RichProgress()


def train(cfg: TrainConfig, progress: bool = True) -> Path:
    """Train per `cfg` and write a complete run folder at cfg.out_dir; return its path."""
    from edgeproof.cli import console
    from edgeproof.train.data import load_data, make_tf_dataset, scan

    cfg.validate()
    out = Path(cfg.out_dir)
    scanned = scan(cfg.data_dir)  # bad data fails here: before TensorFlow's import and any progress bar
    check_out_dir(out)
    from edgeproof.train.tf_quiet import import_tensorflow

    import_tensorflow("edgeproof train")
    import keras
    import tensorflow as tf

    from edgeproof.train import report
    from edgeproof.train.models import build_model, in_graph_preprocess

    t0 = time.perf_counter()
    size = int(cfg.img_size)
    pp = Preprocess(height=size, width=size, interpolation=cfg.interpolation,
                    in_graph=in_graph_preprocess(cfg.model))
    with console.progress(progress) as prog:
        task: list = []  # the bar appears once the files are counted and the data passed its checks
        data = load_data(cfg.data_dir, pp, seed=int(cfg.seed), scanned=scanned,
                         on_total=lambda n: task.append(prog.add_task("reading images", total=n)),
                         on_done=lambda n: prog.advance(task[0], n))
    if data.skipped:
        summary = ", ".join(f"{n} {r}" for r, n in data.skipped_summary().items())
        console.warn(f"skipped {len(data.skipped)} file(s) that are not usable images: {summary} "
                     f"(list in {run_dir.SPLIT_FILE} and {run_dir.METRICS_FILE})")
    t_load = time.perf_counter() - t0

    keras.utils.set_random_seed(int(cfg.seed))
    was_deterministic = _determinism_enabled()
    if cfg.deterministic and not was_deterministic:
        tf.config.experimental.enable_op_determinism()
    try:
        model = build_model(cfg.model, size, len(data.classes), float(cfg.alpha))
        model.compile(optimizer=keras.optimizers.Adam(float(cfg.lr)),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        tr, va = data.splits["train"], data.splits["val"]
        train_ds = make_tf_dataset(tr.images, tr.labels, int(cfg.batch_size), augment=cfg.augment,
                                   seed=int(cfg.seed))
        predict = _predictor(model, size)
        steps = max(1, len(tr.labels) // int(cfg.batch_size))  # full batches only
        stopper = keras.callbacks.EarlyStopping(monitor="val_loss", patience=int(cfg.patience),
                                                restore_best_weights=True)
        t1 = time.perf_counter()
        with console.progress(progress) as prog:
            hist = model.fit(train_ds, epochs=int(cfg.epochs), verbose=0, shuffle=False, callbacks=[
                _validation_callback(keras, predict, tr.images, va.images, va.labels, int(cfg.seed)),
                stopper, _progress_callback(keras, prog, int(cfg.epochs), steps)])
        t_train = time.perf_counter() - t1
        history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
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
        "data_root": str(Path(cfg.data_dir).resolve()), "layout": data.layout, "seed": int(cfg.seed),
        "epochs_requested": int(cfg.epochs), "epochs_run": len(val_losses), "best_epoch": best_epoch,
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
    _write_run(out, model, data, pp, metrics, history, best_epoch, int(cfg.seed), t0)
    return out


def _write_run(out: Path, model, data, pp: Preprocess, metrics: dict, history: dict, best_epoch: int,
               seed: int, t0: float) -> None:
    from edgeproof.atomic import write_json, write_text
    from edgeproof.train import report
    from edgeproof.train.datasets import make_readable

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
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
        metrics["seconds"]["total"] = round(time.perf_counter() - t0, 2)
        write_json(tmp / run_dir.METRICS_FILE, metrics)
        make_readable(tmp)
        _swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
