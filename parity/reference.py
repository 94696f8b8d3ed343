"""The Keras reference: the trained model's own predictions on a batch (TensorFlow imported lazily)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

HEAD_ATTR = "_edgeproof_head"  # how the loaded model carries its output head to predict (and Ray actors)


def load_keras(path: str | Path, head: str = "probabilities", trust_model: bool = False):
    """The Keras reference: a run's model.keras, or a bare .keras/.h5/SavedModel, tagged with its head."""
    from edgeproof.convert.keras_model import load_model, model_kind

    path = Path(path)
    model = load_model(path, model_kind(path), "parity (the Keras reference)", trust_model)
    object.__setattr__(model, HEAD_ATTR, head)  # a plain attribute: not tracked or saved by Keras
    return model


def predict(model, x: np.ndarray, batch_size: int = 64, head: str | None = None) -> np.ndarray:
    """float32 (N, C) class scores of the reference (convert.keras_model.class_scores_of); head: the model's
    own (from load_keras) unless given."""
    from edgeproof.convert.keras_model import class_scores_of

    return class_scores_of(model, x, head or getattr(model, HEAD_ATTR, "probabilities"), batch_size)


def latency_samples(model, x: np.ndarray, reps: int = 10) -> list[float]:
    """Seconds per single-image call (after one warm-up)."""
    if len(x) == 0:
        return []
    model(x[:1], training=False)
    samples = []
    for i in range(min(reps, len(x))):
        t = time.perf_counter()
        model(x[i:i + 1], training=False)
        samples.append(time.perf_counter() - t)
    return samples
