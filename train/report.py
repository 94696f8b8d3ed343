"""Evaluation numbers and the human-facing outputs of a run: metrics, history.csv, PNG plots."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from edgeproof.atomic import write_png, write_text


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """cm[i, j] = images of true class i predicted as class j."""
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    return cm


def per_class_scores(cm: np.ndarray, classes: list[str]) -> dict[str, dict[str, float | int]]:
    """Precision, recall, F1 and support per class (0.0 where undefined, as sklearn's zero_division=0)."""
    tp = np.diag(cm).astype(float)
    predicted, actual = cm.sum(axis=0).astype(float), cm.sum(axis=1).astype(float)
    out = {}
    for i, name in enumerate(classes):
        p = tp[i] / predicted[i] if predicted[i] else 0.0
        r = tp[i] / actual[i] if actual[i] else 0.0
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        out[name] = {"precision": round(p, 4), "recall": round(r, 4), "f1": round(f1, 4),
                     "support": int(actual[i])}
    return out


def split_metrics(y_true: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """Accuracy, mean cross-entropy, confusion matrix and per-class scores for one split."""
    n = len(y_true)
    if n == 0:
        return {"count": 0, "accuracy": None, "loss": None, "per_class": {}, "confusion_matrix": []}
    pred = probs.argmax(axis=1)
    cm = confusion_matrix(y_true, pred, len(classes))
    p_true = np.clip(probs[np.arange(n), y_true], 1e-7, 1.0)
    scores = per_class_scores(cm, classes)
    return {
        "count": int(n),
        "accuracy": round(float((pred == y_true).mean()), 4),
        "loss": round(float(-np.log(p_true).mean()), 4),
        "macro_f1": round(float(np.mean([s["f1"] for s in scores.values()])), 4),
        "per_class": scores,
        "confusion_matrix": cm.tolist(),
    }


def write_history_csv(path: Path, history: dict[str, list[float]]) -> None:
    keys = list(history)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["epoch", *keys])
    for e in range(len(history[keys[0]]) if keys else 0):
        w.writerow([e + 1, *[f"{history[k][e]:.6g}" for k in keys]])
    write_text(path, buf.getvalue())


def plot_training(path: Path, history: dict[str, list[float]], best_epoch: int | None, title: str) -> None:
    """Loss and accuracy per epoch, train and val, with the restored epoch marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((axes[0], "loss", "loss"), (axes[1], "accuracy", "accuracy")):
        for prefix, style in (("", "-o"), ("val_", "-s")):
            values = history.get(prefix + key)
            if values:
                ax.plot(range(1, len(values) + 1), values, style, ms=3, label=(prefix or "train_") + key)
        if best_epoch:
            ax.axvline(best_epoch, color="gray", ls="--", lw=1, label=f"best epoch {best_epoch}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    write_png(fig, path)


def plot_confusion(path: Path, cm: list[list[int]], classes: list[str], title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = np.asarray(cm, dtype=float) if cm else np.zeros((len(classes), len(classes)))
    k = len(classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * k + 2, 0.6 * k + 2))
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(k), classes, rotation=45, ha="right")
    ax.set_yticks(range(k), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = m.max() if m.size else 0
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center",
                    color="white" if top and m[i, j] > top / 2 else "black", fontsize=8)
    ax.set_title(title)
    return write_png(fig, path)
