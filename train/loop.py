"""The one training loop: a custom step under `strategy.run`, for one worker and for many.

Keras 3's `model.fit` fails under MultiWorkerMirroredStrategy on TF 2.21 (keras-team/keras#20585), so
every run, single-process included, trains with the same step: forward and backward under a
GradientTape, the loss averaged over the *global* batch with `tf.nn.compute_average_loss`, and Keras'
optimizer applying the (all-reduced) gradients. With one worker the strategy is TensorFlow's default
strategy and `strategy.run` is a plain call, so nothing is paid for the generality.

BatchNormalization runs synchronized (statistics over the global batch, all-reduced) whenever there
is more than one replica, so 2 workers x B/2 compute what 1 worker x B computes.

Phases (for transfer learning: a frozen backbone, then fine-tuning) are a list of `Phase`s: by default
`TrainConfig.schedule()` turns the model's transfer plan (models.transfer_plan / set_trainable, for
keras.applications backbones) into phases; `TrainConfig.phases` overrides it. Each phase has its
epochs, learning rate and either a regex naming the layers it trains or a `select(model)` function,
for example

    phases=(Phase(epochs=5, lr=1e-3, trainable=r"head.*|probs"),   # backbone frozen
            Phase(epochs=10, lr=1e-5))                               # everything, small steps

Early stopping ends the current phase (the next one still runs); the best epoch over all phases is
what is saved. One Adam runs through all phases (its learning rate is set per phase; the moments of a
variable frozen for a while are kept). A resumed run re-enters the phase its next epoch belongs to,
with the optimizer state of its checkpoint.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Phase:
    """A stretch of training: `epochs` epochs at learning rate `lr`, training the layers whose name
    matches `trainable` (re.fullmatch, at any depth: a nested backbone's own layers count; a layer
    inside a matching one is trained too). None trains every layer. Frozen BatchNormalization layers
    run in inference mode, as Keras does for trainable=False."""

    epochs: int
    lr: float
    trainable: str | None = None
    # Instead of `trainable`: a function that sets the layers' flags itself (models.set_trainable for the
    # keras.applications transfer plan). Not part of the resume check: it follows from the model and weights.
    select: Callable[[Any], Any] | None = field(default=None, compare=False, repr=False)
    label: str = field(default="", compare=False)  # what trains, in words ("all", "head", "top")


def phase_bounds(phases: Sequence[Phase]) -> list[tuple[int, int]]:
    """[(first epoch, end epoch)) of each phase, 0-based."""
    out, start = [], 0
    for p in phases:
        out.append((start, start + int(p.epochs)))
        start += int(p.epochs)
    return out


def phase_of(phases: Sequence[Phase], epoch: int) -> int:
    for i, (start, end) in enumerate(phase_bounds(phases)):
        if start <= epoch < end:
            return i
    return len(phases) - 1


def _sublayers(layer: Any) -> list[Any]:
    return list(getattr(layer, "layers", None) or [])


def _all_layers(model: Any) -> list[Any]:
    found, stack = [], [model]
    while stack:
        layer = stack.pop()
        found.append(layer)
        stack.extend(_sublayers(layer))
    return found


def _train_all(model: Any) -> None:
    # Setting a Functional model's `trainable` does not reach its layers in Keras 3: set each one.
    for layer in _all_layers(model):
        layer.trainable = True


def apply_phase(model: Any, optimizer: Any, phase: Phase) -> None:
    """Set each layer's `trainable` flag and the optimizer's learning rate for `phase`."""
    optimizer.learning_rate.assign(float(phase.lr))
    _train_all(model)
    if phase.select is not None:
        phase.select(model)
        return
    if phase.trainable is None:
        return
    pattern = re.compile(phase.trainable)

    def walk(layer: Any, inherited: bool) -> bool:
        on = inherited or bool(pattern.fullmatch(layer.name))
        children = _sublayers(layer)
        if not children:
            layer.trainable = on
            return on
        any_on = [walk(child, on) for child in children]
        if not any(any_on):
            layer.trainable = False  # a container with nothing trainable: frozen as a whole
        return any(any_on)

    for layer in _sublayers(model):
        walk(layer, False)


@contextmanager
def unfrozen(model: Any) -> Iterator[None]:
    """Every layer trainable inside the block, each flag restored after it: a checkpoint saved in a frozen
    phase then loads with an optimizer built over every variable, as this loop builds it."""
    flags = [(layer, layer.trainable) for layer in _all_layers(model)]
    _train_all(model)
    try:
        yield
    finally:
        for layer, flag in flags:  # parents before their children: each layer gets its own flag back
            layer.trainable = flag


def batchnorm_layers(model: Any) -> list[Any]:
    import keras

    return [layer for layer in _all_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]


def make_train_step(strategy: Any, model: Any, optimizer: Any, global_batch: int) -> Callable:
    """A tf.function running one global step over a distributed iterator -> (mean loss, correct count).

    Made anew for each phase: the set of trainable variables is fixed when the function is traced.
    """
    import keras
    import tensorflow as tf

    sync_bn = strategy.num_replicas_in_sync > 1
    bns = batchnorm_layers(model) if sync_bn else []
    variables = list(model.trainable_variables)

    def replica_step(x, y):
        for layer in bns:  # read when the step is traced: statistics over the global batch
            layer.synchronized = True
        try:
            with tf.GradientTape() as tape:
                probs = model(x, training=True)
                per_example = keras.losses.sparse_categorical_crossentropy(y, probs)
                loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
                if model.losses:  # weight regularizers, divided among the replicas
                    loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
        finally:
            for layer in bns:
                layer.synchronized = False
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(grads, variables))
        hits = tf.cast(tf.equal(tf.argmax(probs, axis=-1), tf.cast(y, tf.int64)), tf.float32)
        return loss, tf.reduce_sum(hits)

    @tf.function
    def train_step(iterator):
        loss, hits = strategy.run(replica_step, args=next(iterator))
        return (strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None),
                strategy.reduce(tf.distribute.ReduceOp.SUM, hits, axis=None))

    return train_step


def run_epoch(step: Callable, batches: Iterator, steps: int, global_batch: int,
              on_step: Callable[[], None] | None = None) -> dict[str, float]:
    """`steps` global steps -> {"loss": mean batch loss, "accuracy": fraction right}, as fit logs them."""
    loss_sum, hits = 0.0, 0.0
    for _ in range(steps):
        loss, right = step(batches)
        loss_sum += float(loss)
        hits += float(right)
        if on_step:
            on_step()
    return {"loss": loss_sum / steps, "accuracy": hits / (steps * global_batch)}
