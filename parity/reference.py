"""The Keras reference: the trained model's own predictions on a batch (TensorFlow imported lazily)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def load_keras(path: str | Path):
    from edgeproof.train.run_dir import load_keras_model

    return load_keras_model(path, "parity (the Keras reference)")


def predict(model, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """float32 (N, C) probabilities: the model called directly (no Keras predict-loop overhead)."""
    outs = []
    for i in range(0, len(x), batch_size):
        outs.append(np.asarray(model(x[i:i + batch_size], training=False), dtype=np.float32))
    out = np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)
    if out.ndim != 2:
        out = out.reshape(len(x), -1)
    return out


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
