"""Images whose top-1 changed, and which of those changes were near-ties.

A flip is a *near-tie* when the reference itself barely decided: its top-1 − top-2 margin is below the
noise this artifact adds to exactly that margin on the same images. The noise is measured, not assumed:
for every image, with a, b the reference's top-2 classes, Δmargin = (cand[a] − cand[b]) − (ref[a] − ref[b]);
the artifact's noise is the NOISE_QUANTILE of |Δmargin| over all images. A flip where the reference's margin
is below that noise says nothing about the artifact beyond "it is as noisy as its tensors say", and the
reference would have flipped under the same perturbation.

The gate's decision (documented in README "Parity gate"): near-tie flips count as agreements for the top-1
agreement limit, but only where the format's tolerance allows it (`Tolerance.near_tie_max_margin`, a cap in
probability units: the noise threshold is min(measured noise, cap)); fp32 keeps the strict rule, fp16 (weight
rounding moves a probability by about 1e-3) is capped at its max_abs (edgeproof.formats.FLOAT16), and
`edgeproof parity --strict-ties` brings the strict rule back for every format. The Δaccuracy limit always counts every
flip, and the cap keeps a badly broken artifact (huge noise) from excusing its confident flips.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

NOISE_QUANTILE = 0.95


@dataclass
class FlipStats:
    noise: float  # NOISE_QUANTILE of |Δmargin| over all images (probability units)
    threshold: float | None  # min(noise, cap); None: strict rule, no flip is a near-tie
    indices: list[int] = field(default_factory=list)  # images whose top-1 changed
    near_tie: list[bool] = field(default_factory=list)  # per flip

    @property
    def count(self) -> int:
        return len(self.indices)

    @property
    def near_ties(self) -> int:
        return int(sum(self.near_tie))

    def to_dict(self) -> dict:
        return {"count": self.count, "near_ties": self.near_ties, "noise": round(self.noise, 6),
                "noise_quantile": NOISE_QUANTILE,
                "near_tie_threshold": None if self.threshold is None else round(self.threshold, 6)}


def _top2(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-probs, axis=1, kind="stable")
    return order[:, 0], order[:, 1] if probs.shape[1] > 1 else order[:, 0]


def flip_stats(reference: np.ndarray, candidate: np.ndarray, cap: float | None) -> FlipStats:
    """Which images changed top-1 and which of those were near-ties (see module docstring)."""
    ref = np.asarray(reference, np.float64)
    cand = np.asarray(candidate, np.float64)
    rows = np.arange(len(ref))
    a, b = _top2(ref)
    ref_margin = ref[rows, a] - ref[rows, b]
    d_margin = np.abs((cand[rows, a] - cand[rows, b]) - ref_margin)
    noise = float(np.quantile(d_margin, NOISE_QUANTILE)) if len(ref) else 0.0
    threshold = None if cap is None else min(noise, float(cap))
    flipped = np.flatnonzero(ref.argmax(1) != cand.argmax(1))
    near = [bool(threshold is not None and ref_margin[i] < threshold) for i in flipped]
    return FlipStats(noise=noise, threshold=threshold, indices=[int(i) for i in flipped], near_tie=near)


def flip_records(reference: np.ndarray, candidate: np.ndarray, stats: FlipStats, paths: list[str],
                 labels_true: np.ndarray | None, names: list[str]) -> list[dict]:
    """One entry per flipped image: path, true label, reference and artifact top-2 with scores, margin."""
    out = []
    for i, near in zip(stats.indices, stats.near_tie):
        r, c = reference[i], candidate[i]
        ra, rb = _top2(r[None])
        ca, cb = _top2(c[None])
        ra, rb, ca, cb = int(ra[0]), int(rb[0]), int(ca[0]), int(cb[0])
        out.append({
            "index": i, "path": paths[i] if i < len(paths) else "",
            "true": None if labels_true is None else names[int(labels_true[i])],
            "reference_top2": [[names[ra], round(float(r[ra]), 4)], [names[rb], round(float(r[rb]), 4)]],
            "reference_margin": round(float(r[ra] - r[rb]), 4),
            "artifact_top2": [[names[ca], round(float(c[ca]), 4)], [names[cb], round(float(c[cb]), 4)]],
            "near_tie": bool(near),
        })
    return out


def summary(stats: FlipStats) -> str:
    """'3 image(s) changed class, 2 near-tie(s) (Keras margin < 0.021, this artifact's p95 noise)'."""
    text = f"{stats.count} image(s) changed class"
    if stats.threshold is None:
        return text + " (strict rule: near-ties count)"
    return (text + f", {stats.near_ties} near-tie(s) (Keras margin < {stats.threshold:.3g}: this artifact's "
            f"p{NOISE_QUANTILE * 100:g} margin noise {stats.noise:.3g}, capped at the format's limit)")


def attach(rows, reference: np.ndarray, images, names: list[str]) -> None:
    """Give every judged row the list of its flipped images (parity.json / parity.md / contact sheet)."""
    for r in rows:
        c = getattr(r, "comparison", None)
        if c is None or c.flips is None or r.probs is None:
            continue
        r.flipped = flip_records(reference, r.probs, c.flips, images.paths, images.labels, names)
