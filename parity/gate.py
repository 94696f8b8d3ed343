"""One artifact's outputs against the Keras reference: metrics plus a pass/fail verdict.

Every violated limit becomes a `Failure` (all of them, not just the first), each saying the metric,
its value and the limit, with counts where a fraction would hide how few images there were.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from edgeproof.formats import Tolerance
from edgeproof.parity.flips import FlipStats, flip_stats, summary
from edgeproof.parity.metrics import TaskMetrics, TensorMetrics, min_count_for, task_metrics, tensor_metrics
from edgeproof.parity.significance import ALPHA, CONFIDENCE, AccuracyTest

EPS = 1e-12


@dataclass
class Failure:
    metric: str  # "max_abs", "top1_agreement", "delta_acc_pp", "snr_db", "load", "run"
    value: float | str | None
    limit: float | str | None
    message: str
    artifact: str = ""
    backend: str = ""

    def line(self) -> str:
        where = f"{self.artifact} [{self.backend}]: " if self.artifact else ""
        return f"{where}{self.message}"

    def to_dict(self) -> dict:
        return {"artifact": self.artifact, "backend": self.backend, "metric": self.metric,
                "value": self.value, "limit": self.limit, "message": self.message}


@dataclass
class Comparison:
    tensor: TensorMetrics
    task: TaskMetrics
    tolerance: Tolerance
    failures: list[Failure] = field(default_factory=list)
    flips: FlipStats | None = None

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def accuracy_test(self) -> AccuracyTest | None:
        """The paired test of the accuracy change (None without ground-truth labels)."""
        return accuracy_test(self.task)

    @property
    def verdict(self) -> str:
        return "pass" if self.passed else "fail"

    def to_dict(self) -> dict:
        return {"verdict": self.verdict, **self.tensor.to_dict(), **self.task.to_dict(),
                "flips": self.flips.to_dict() if self.flips is not None else None,
                "accuracy_test": self.accuracy_test.to_dict() if self.accuracy_test is not None else None,
                "tolerance": tolerance_dict(self.tolerance), "failures": [f.to_dict() for f in self.failures]}


def accuracy_test(task: TaskMetrics) -> AccuracyTest | None:
    if task.lost is None or task.gained is None:
        return None
    return AccuracyTest(task.n, task.lost, task.gained)


def tolerance_dict(tol: Tolerance) -> dict:
    return {"max_abs": tol.max_abs, "min_top1_agreement": tol.min_top1_agreement,
            "max_delta_acc_pp": tol.max_delta_acc_pp, "delta_acc": "one-sided loss, exact paired test",
            "alpha": ALPHA, "min_snr_db": tol.min_snr_db, "near_tie_max_margin": tol.near_tie_max_margin}


def override(tol: Tolerance, max_abs: float | None = None, min_agreement: float | None = None,
             max_delta_acc: float | None = None, strict_ties: bool = False, min_snr: float | None = None) -> Tolerance:
    """The format's tolerance with any flag the user gave replacing its field (strict_ties: every flip counts)."""
    changes: dict = {"near_tie_max_margin": None} if strict_ties else {}
    if min_snr is not None:
        changes["min_snr_db"] = min_snr
    if max_abs is not None:
        changes["max_abs"] = max_abs
    if min_agreement is not None:
        changes["min_top1_agreement"] = min_agreement
    if max_delta_acc is not None:
        changes["max_delta_acc_pp"] = max_delta_acc
    return replace(tol, **changes) if changes else tol


# min_snr is a floor in dB: below 0 the noise outweighs the signal, and a floor there passes anything.
TOL_FLAGS = {"max_abs": (0.0, None), "min_agreement": (0.0, 1.0), "max_delta_acc": (0.0, None), "min_snr": (0.0, None)}


def check_flags(flags: dict) -> dict:
    """The tolerance overrides that were given (None dropped), each a finite number in its range, else UsageError
    (a NaN limit fails every artifact, an unknown name would be ignored): checked once, before any work."""
    import math

    from edgeproof.errors import UsageError

    out = {k: v for k, v in flags.items() if v is not None}
    for name, value in out.items():
        if name == "strict_ties":
            continue
        if name not in TOL_FLAGS:
            raise UsageError(f"unknown tolerance override {name!r}; valid: {', '.join(TOL_FLAGS)}, strict_ties")
        lo, hi = TOL_FLAGS[name]
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
            and (lo is None or value >= lo) and (hi is None or value <= hi)
        if not ok:
            span = f"{lo:g}..{hi:g}" if hi is not None else (f">= {lo:g}" if lo is not None else "any finite number")
            raise UsageError(f"tolerance override {name}={value!r} is not valid; give {span}")
    return out


def pct_apart(value: float, limit: float) -> str:
    """value as a percentage with enough decimals not to read as the limit (98.96 %, not 99.0 % < 99.0 %)."""
    for digits in range(1, 5):
        text = f"{value:.{digits}%}"
        if text != f"{limit:.{digits}%}":
            return text
    return text


def check(tensor: TensorMetrics, task: TaskMetrics, tol: Tolerance, flips: FlipStats | None = None) -> list[Failure]:
    """Every limit the artifact violates. Near-tie flips (flips.py) count as agreement, nothing else does.

    Accuracy: a loss (never a gain) over max_delta_acc_pp fails only when the exact paired test on the images
    that changed says it is not chance (parity.significance; p < ALPHA). The agreement and SNR floors are
    absolute: they hold an artifact to the reference's answers and scores whatever the labels say."""
    out: list[Failure] = []
    if tol.max_abs is not None and not tensor.max_abs <= tol.max_abs:
        out.append(Failure("max_abs", tensor.max_abs, tol.max_abs,
                           f"max |Δ| of probabilities {tensor.max_abs:.3g} > limit {tol.max_abs:.3g}"))
    need = min_count_for(tol.min_top1_agreement, task.n)
    excused = flips.near_ties if flips is not None else 0
    agree = (task.top1_agree_count + excused) / task.n
    if agree + EPS < tol.min_top1_agreement:
        changed = summary(flips) if flips is not None else f"{task.n - task.top1_agree_count} image(s) changed class"
        counted = f", {task.top1_agree_count + excused}/{task.n} counting near-ties as agreeing" if excused else ""
        out.append(Failure(
            "top1_agreement", agree, tol.min_top1_agreement,
            f"top-1 agreement {task.top1_agree_count}/{task.n} ({pct_apart(task.top1_agreement, tol.min_top1_agreement)}"
            f"{counted}) < "
            f"{tol.min_top1_agreement:.1%} (needs >= {need}/{task.n}: {changed})"))
    test = accuracy_test(task)
    if tol.max_delta_acc_pp is not None and test is not None:
        loss = -test.delta_pp  # one-sided: a gain is never a failure
        if loss > tol.max_delta_acc_pp + 1e-9 and test.significant_loss():
            lo, hi = test.interval_pp()
            out.append(Failure(
                "delta_acc_pp", task.delta_acc_pp, tol.max_delta_acc_pp,
                f"Δaccuracy {task.delta_acc_pp:+.2f} pp: a loss over {tol.max_delta_acc_pp:g} pp and not chance "
                f"({test.lost} lost, {test.gained} gained among the images that changed: exact one-sided p = "
                f"{test.p_value:.2g} < {ALPHA:g}; {CONFIDENCE:.0%} CI {lo:+.1f}…{hi:+.1f} pp; {task.correct}/{task.n} "
                f"correct vs Keras {task.reference_correct}/{task.n})"))
    if tol.min_snr_db is not None and not tensor.snr_db >= tol.min_snr_db:
        out.append(Failure("snr_db", tensor.snr_db, tol.min_snr_db,
                           f"SNR of probabilities {tensor.snr_db:.1f} dB < floor {tol.min_snr_db:g} dB (the scores "
                           "are mostly quantization noise, whatever the top-1 says)"))
    return out


def compare(reference_probs: np.ndarray, candidate_probs: np.ndarray, labels_true: np.ndarray | None,
            tolerance: Tolerance) -> Comparison:
    """Metrics and verdict of one candidate's probabilities against the reference's, same images."""
    tm = tensor_metrics(reference_probs, candidate_probs)
    km = task_metrics(reference_probs, candidate_probs, labels_true)
    fs = flip_stats(reference_probs, candidate_probs, tolerance.near_tie_max_margin)
    return Comparison(tensor=tm, task=km, tolerance=tolerance, failures=check(tm, km, tolerance, fs), flips=fs)
