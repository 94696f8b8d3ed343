"""Parity metrics on NumPy arrays: tensor closeness and task agreement (no heavy imports).

Tensor metrics compare output probabilities element-wise; task metrics compare decisions.
Counts are kept next to fractions because on a 60-image test set "99 % agreement" means
"zero disagreements", and a report should say 59/60, not 98.3 %.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from edgeproof.errors import UsageError
from edgeproof.train.report import confusion_matrix  # noqa: F401 - one definition, re-exported for parity users


@dataclass
class TensorMetrics:
    max_abs: float
    mean_abs: float
    cosine: float  # mean over images of the per-image cosine similarity
    snr_db: float  # 10 log10(sum ref^2 / sum (ref - cand)^2); inf when identical

    def to_dict(self) -> dict:
        return {k: json_float(v) for k, v in asdict(self).items()}


@dataclass
class TaskMetrics:
    n: int
    top5_k: int  # min(5, classes): with <= 5 classes every class is in the top-5
    top1_agree_count: int
    top5_agree_count: int
    top1_agreement: float
    top5_agreement: float
    accuracy: float | None  # candidate top-1 accuracy (None without ground-truth labels)
    reference_accuracy: float | None
    correct: int | None
    reference_correct: int | None
    delta_acc_pp: float | None  # candidate - reference, percentage points
    lost: int | None = None  # images Keras gets right and the candidate wrong (the paired test's losses)
    gained: int | None = None  # images Keras gets wrong and the candidate right

    def to_dict(self) -> dict:
        return {k: json_float(v) for k, v in asdict(self).items()}


def json_float(v):
    """inf/nan are not JSON: write them as strings, keep everything else as is."""
    if isinstance(v, float) and not math.isfinite(v):
        return "inf" if v > 0 else ("-inf" if v < 0 else "nan")
    return v


def _check_pair(reference: np.ndarray, candidate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if ref.shape != cand.shape:
        raise UsageError(f"output shapes differ: reference {ref.shape} vs candidate {cand.shape}; "
                         "both must be (images, classes)")
    if ref.ndim != 2 or ref.shape[0] == 0:
        raise UsageError(f"expected a non-empty (images, classes) array, got shape {ref.shape}")
    if not np.all(np.isfinite(cand)):
        bad = int(np.sum(~np.isfinite(cand)))
        raise UsageError(f"candidate outputs contain {bad} NaN/inf values; the artifact produced invalid numbers")
    return ref, cand


def tensor_metrics(reference: np.ndarray, candidate: np.ndarray) -> TensorMetrics:
    ref, cand = _check_pair(reference, candidate)
    diff = cand - ref
    abs_diff = np.abs(diff)
    num = np.sum(ref * cand, axis=1)
    den = np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.where(num == 0, 1.0, 0.0))
    noise = float(np.sum(diff * diff))
    signal = float(np.sum(ref * ref))
    snr = math.inf if noise == 0 else (10.0 * math.log10(signal / noise) if signal > 0 else -math.inf)
    return TensorMetrics(max_abs=float(abs_diff.max()), mean_abs=float(abs_diff.mean()),
                         cosine=float(np.mean(cos)), snr_db=snr)


def topk_indices(probs: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest scores per row (order inside the k not guaranteed)."""
    k = min(k, probs.shape[1])
    return np.argpartition(-probs, k - 1, axis=1)[:, :k]


def task_metrics(reference: np.ndarray, candidate: np.ndarray,
                 labels_true: np.ndarray | None = None) -> TaskMetrics:
    """Top-1 agreement: same argmax. Top-5 agreement: Keras' top-1 is among the candidate's top-k, k = min(5, classes).

    (Not "same top-5 set": with confident models the classes below the top-1 are ~0, and after int8
    output quantization they tie at exactly 0, so their order is arbitrary and the set meaningless.)
    """
    ref, cand = _check_pair(reference, candidate)
    n, classes = ref.shape
    ref_top1, cand_top1 = ref.argmax(axis=1), cand.argmax(axis=1)
    k = min(5, classes)
    cand_k = topk_indices(cand, k)
    top1 = int(np.sum(ref_top1 == cand_top1))
    top5 = int(np.sum(np.any(cand_k == ref_top1[:, None], axis=1)))
    acc = ref_acc = delta = None
    correct = ref_correct = lost = gained = None
    if labels_true is not None:
        y = np.asarray(labels_true).astype(np.int64).reshape(-1)
        if y.shape[0] != n:
            raise UsageError(f"{y.shape[0]} labels for {n} predictions; give one label per image")
        if y.size and (y.min() < 0 or y.max() >= classes):
            raise UsageError(f"labels must be class indices in [0, {classes - 1}], got {y.min()}..{y.max()}")
        correct, ref_correct = int(np.sum(cand_top1 == y)), int(np.sum(ref_top1 == y))
        acc, ref_acc = correct / n, ref_correct / n
        delta = (correct - ref_correct) * 100.0 / n
        lost = int(np.sum((ref_top1 == y) & (cand_top1 != y)))
        gained = int(np.sum((ref_top1 != y) & (cand_top1 == y)))
    return TaskMetrics(n=n, top5_k=k, top1_agree_count=top1, top5_agree_count=top5,
                       top1_agreement=top1 / n, top5_agreement=top5 / n, accuracy=acc,
                       reference_accuracy=ref_acc, correct=correct, reference_correct=ref_correct,
                       delta_acc_pp=delta, lost=lost, gained=gained)


def min_count_for(fraction: float, n: int) -> int:
    """Smallest count c with c / n >= fraction (what a tolerance really demands on n images)."""
    return min(n, max(0, math.ceil(fraction * n - 1e-9)))


def percentile_ms(samples_s: list[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(samples_s) * 1000.0, q)) if samples_s else None
