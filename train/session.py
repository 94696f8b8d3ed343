"""One worker's training session: model and optimizer under the strategy, resume, the epoch loop.

Every worker of a multi-worker run holds one; they stay in lockstep because each epoch runs the same
number of global steps and every decision (early stopping, phase changes) is taken from the chief's
numbers, which every worker receives in one small all-gather per epoch. Only the chief reads the
checkpoint (the others get its weights by a broadcast) and only the chief writes one.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from edgeproof.errors import UsageError
from edgeproof.progress import Progress
from edgeproof.train.checkpoint import Checkpoints, EarlyStop, State, epoch_seed, resume_config
from edgeproof.train.distributed import Collectives, Topology, fingerprint48, is_collective_failure, lost_error
from edgeproof.train.loop import apply_phase, make_train_step, phase_bounds, phase_of, run_epoch, unfrozen

# Training images used to re-estimate the BatchNorm statistics after each epoch; early stopping then
# restores the best epoch's weights and statistics together, so the saved model is the one validated.
EPOCH_RECALIBRATION = 512
LOG_KEYS = ("accuracy", "loss", "val_loss", "val_accuracy")  # history.csv's columns, as Keras' fit wrote them


def predictor(model: Any, size: int):
    """A traced-once inference function over uint8/float batches (model.predict retraces per shape)."""
    import tensorflow as tf

    fn = tf.function(lambda x: model(x, training=False),
                     input_signature=[tf.TensorSpec((None, size, size, 3), tf.float32)])

    def predict(images: np.ndarray) -> np.ndarray:
        outs = [fn(tf.constant(images[i:i + 256], tf.float32)).numpy() for i in range(0, len(images), 256)]
        return np.concatenate(outs) if outs else np.zeros((0, model.output_shape[-1]), np.float32)

    return predict


def validate(predict, images: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """val_loss (cross-entropy of the softmax, as Keras computes it) and val_accuracy."""
    probs = predict(images)
    p_true = np.clip(probs[np.arange(len(labels)), labels], 1e-7, 1.0)
    return {"val_loss": float(-np.log(p_true).mean()), "val_accuracy": float((probs.argmax(axis=1) == labels).mean())}


class Bar:
    """One bar over every epoch (a resumed run starts it at its first new epoch)."""

    def __init__(self, prog: Any, epochs: int, steps: int, start: int):
        self.prog, self.steps, self.epochs = prog, steps, epochs
        self.task = prog.add_task(f"training epoch {start + 1}/{epochs}", total=epochs * steps,
                                  completed=start * steps)

    def advance(self) -> None:
        self.prog.advance(self.task)

    def epoch_done(self, epoch: int, next_epoch: int, logs: dict[str, float]) -> None:
        self.prog.update(self.task, completed=next_epoch * self.steps, description=(
            f"epoch {epoch + 1}/{self.epochs} loss {logs['loss']:.3f} acc {logs['accuracy']:.3f} "
            f"val_loss {logs['val_loss']:.3f} val_acc {logs['val_accuracy']:.3f}"))

    def finish(self) -> None:
        self.prog.update(self.task, total=self.prog.completed(self.task))


class Session:
    def __init__(self, cfg: Any, strategy: Any, topo: Topology, data: Any, ckpts: Checkpoints | None,
                 progress: Any):
        import keras

        from edgeproof.train.models import build_model

        self.cfg, self.strategy, self.topo, self.data, self.ckpts = cfg, strategy, topo, data, ckpts
        self.progress = progress if topo.is_chief else None  # a callback (edgeproof.progress) or None
        self.phases = cfg.schedule()
        n_train = len(data.splits["train"].labels)
        # The global batch is --batch-size, split evenly over the workers (fewer images: all that split evenly).
        self.global_batch = min(int(cfg.batch_size), n_train // topo.count * topo.count)
        if self.global_batch < topo.count:
            raise UsageError(f"{n_train} training image(s) cannot be split over {topo.count} workers; "
                             "use fewer workers or more data")
        self.steps = max(1, n_train // self.global_batch)  # full batches only
        with strategy.scope():
            self.model = build_model(cfg.model, int(cfg.img_size), len(data.classes), float(cfg.alpha),
                                     cfg.weights)
            self.optimizer = keras.optimizers.Adam(float(self.phases[0].lr))
            self.model.compile(optimizer=self.optimizer, loss="sparse_categorical_crossentropy",
                               metrics=["accuracy"])
            with unfrozen(self.model):  # every variable: later phases may unfreeze (checkpoints save it so)
                self.optimizer.build(self.model.trainable_variables)
        self.predict = predictor(self.model, int(cfg.img_size))
        self.collectives = Collectives(strategy, topo.is_chief)
        self.best_weights: list[np.ndarray] | None = None
        self.seconds = 0.0

    # ------------------------------------------------------------ start: fresh, resumed, agreed

    def start(self, state: State | None, fingerprint: dict[str, Any], ckpts: Checkpoints | None) -> State:
        """The state to continue from, the same on every worker (the chief's)."""
        import keras

        cfg = self.cfg
        if state is None:
            state = State(epoch=0, history={}, early=EarlyStop(int(cfg.patience)), config=resume_config(cfg),
                          data=fingerprint)
        elif ckpts is not None:  # the chief: the model with its optimizer state after the checkpoint's epoch
            saved = keras.saving.load_model(str(ckpts.model_path(state)), compile=True)
            self.model.set_weights(saved.get_weights())
            mine, theirs = self.optimizer.variables, saved.optimizer.variables
            if len(mine) != len(theirs):
                raise UsageError(f"the checkpoint in '{ckpts.dir}' holds another optimizer state ({len(theirs)} "
                                 f"variables, expected {len(mine)}); train without --resume to start over")
            for var, value in zip(mine, theirs, strict=True):
                var.assign(value)
            self.best_weights = ckpts.best_weights(state)
        if self.topo.count == 1:
            return state
        early = state.early
        row = [float(self.topo.rank), fingerprint48(resume_config(cfg)), fingerprint48(fingerprint["sha256"]),
               float(state.epoch), -1.0 if early.best is None else 1.0, early.best or 0.0,
               float(early.best_epoch), float(early.wait), float(early.stopped)]
        rows = self.collectives.gather(row)
        for r in rows[1:]:
            for col, what in ((1, "options"), (2, "data")):
                if r[col] != rows[0][col]:
                    raise UsageError(f"worker {int(r[0])} trains with other {what} than the chief (worker 0); "
                                     "start every worker with the same command and the same data folder")
        chief = rows[0]
        if not self.topo.is_chief:
            state.epoch = int(chief[3])
            state.early = EarlyStop(int(cfg.patience), best=None if chief[4] < 0 else float(chief[5]),
                                    best_epoch=int(chief[6]), wait=int(chief[7]), stopped=bool(chief[8]))
        if state.epoch:  # resumed: every worker continues from the chief's weights and optimizer state
            self.collectives.broadcast([*self.model.weights, *self.optimizer.variables])
        return state

    # ------------------------------------------------------------ the epoch loop

    def fit(self, state: State) -> None:
        try:
            with Progress(self.progress) as prog:
                bar = Bar(prog, int(self.cfg.epochs), self.steps, state.epoch)
                self._epochs(state, bar)
                bar.finish()
        except Exception as exc:
            if self.topo.count == 1 or not is_collective_failure(exc):
                raise
            raise lost_error(self.topo, exc, state.epoch, self._resume_hint(state)) from None

    def _resume_hint(self, state: State) -> str:
        if not self.topo.is_chief:
            return "the chief keeps the last checkpoint: start every worker again with --resume"
        out = self.ckpts.out if self.ckpts else self.cfg.out_dir
        if state.epoch and self.ckpts is not None:
            return (f"'{out}' is as before this run; start every worker again with --resume to continue after "
                    f"epoch {state.epoch} (checkpoint in '{self.ckpts.dir}')")
        return f"'{out}' is as before this run; start every worker again"

    def _epochs(self, state: State, bar: Bar) -> None:
        import tensorflow as tf

        from edgeproof.train.data import make_tf_dataset
        from edgeproof.train.models import recalibrate_batchnorm

        cfg, strategy = self.cfg, self.strategy
        tr, va = self.data.splits["train"], self.data.splits["val"]
        train_images = tf.constant(tr.images)  # one copy for every epoch's dataset
        seed, total = int(cfg.seed), int(cfg.epochs)
        bounds = phase_bounds(self.phases)
        step, step_phase = None, -1
        t1 = time.perf_counter() - state.train_seconds
        epoch = state.epoch
        while epoch < total and not state.early.stopped:
            p = phase_of(self.phases, epoch)
            if p != step_phase:  # the trainable set and learning rate of this phase; traced once per phase
                apply_phase(self.model, self.optimizer, self.phases[p])
                step, step_phase = make_train_step(strategy, self.model, self.optimizer, self.global_batch), p
            # Each epoch's shuffle and augmentation depend on (seed, epoch) only: resumable exactly.
            eseed = epoch_seed(seed, epoch)
            batches = strategy.distribute_datasets_from_function(
                lambda ctx, s=eseed: make_tf_dataset(train_images, tr.labels, self.global_batch,
                                                     augment=cfg.augment, seed=s,
                                                     shard=(ctx.input_pipeline_id, ctx.num_input_pipelines)))
            logs = run_epoch(step, iter(batches), self.steps, self.global_batch, on_step=bar.advance)
            recalibrate_batchnorm(self.model, tr.images, max_images=EPOCH_RECALIBRATION, seed=seed)
            logs.update(validate(self.predict, va.images, va.labels))
            if self.topo.count > 1:  # every worker decides with the chief's numbers: lockstep by construction
                chief = self.collectives.gather([logs[k] for k in LOG_KEYS])[0]
                logs = {k: float(v) for k, v in zip(LOG_KEYS, chief, strict=True)}
            for k in LOG_KEYS:
                state.history.setdefault(k, []).append(float(logs[k]))
            improved = state.early.update(epoch, logs["val_loss"])
            if improved and self.topo.is_chief:
                self.best_weights = self.model.get_weights()
            done = epoch
            epoch += 1
            if state.early.stopped and p < len(self.phases) - 1:  # ends this phase; the next one still runs
                epoch, state.early.wait, state.early.stopped = bounds[p][1], 0, False
            state.epoch, state.train_seconds = epoch, time.perf_counter() - t1
            bar.epoch_done(done, epoch, logs)
            if self.ckpts is not None and self.topo.is_chief:
                with unfrozen(self.model):
                    self.ckpts.save(self.model, state, self.best_weights if improved else None)
        self.seconds = time.perf_counter() - t1
