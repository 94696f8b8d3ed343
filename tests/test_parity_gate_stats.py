"""The accuracy gate is one-sided and judged against the size of the evaluation set (exact paired test).

Constructed predictions on 192 images (the shapes test split's size), so every count is known exactly.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgeproof.formats import FORMATS
from edgeproof.parity.gate import compare
from edgeproof.parity.significance import ALPHA, AccuracyTest, binomial_tail, clopper_pearson

INT8 = FORMATS["tflite-int8"].tolerance
N, CLASSES = 192, 3


def _confident(n: int = N, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A reference that is confident everywhere (top-1 0.9) and right on every image; labels = its top-1."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, n)
    ref = np.full((n, CLASSES), 0.05)
    ref[np.arange(n), y] = 0.9
    return ref, y


def _int8_noise(ref: np.ndarray, seed: int = 1) -> np.ndarray:
    cand = np.clip(ref + np.random.default_rng(seed).normal(0, 0.004, ref.shape), 1e-6, None)
    return cand / cand.sum(1, keepdims=True)


def _near_tie_flips(ref: np.ndarray, y: np.ndarray, rows: list[int], keras_right: bool
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Make `rows` near-ties in the reference (margin 0.004) and flip exactly those in the candidate.

    keras_right: the reference's top-1 is the true label there (each flip loses an image), else the runner-up
    is (each flip gains one)."""
    ref = ref.copy()
    for i in rows:
        a, b = int(y[i]), (int(y[i]) + 1) % CLASSES
        if not keras_right:
            a, b = b, a
        ref[i] = 0.0
        ref[i, a], ref[i, b] = 0.502, 0.498
    cand = _int8_noise(ref)
    for i in rows:
        a, b = np.argsort(-ref[i])[:2]
        cand[i, a], cand[i, b] = ref[i, b] - 0.001, ref[i, a] + 0.001
    return ref, cand


def test_exact_test_matches_hand_computed_values():
    assert binomial_tail(2, 2) == 0.25  # both discordant images lost: 1/4 by chance
    assert binomial_tail(14, 14) == 2.0 ** -14
    assert binomial_tail(3, 4) == 5 / 16
    assert binomial_tail(0, 5) == 1.0 and binomial_tail(6, 5) == 0.0
    lo, hi = clopper_pearson(0, 10)  # k = 0: the upper end solves (1 - p)^10 = alpha
    assert lo == 0.0 and hi == pytest.approx(1 - ALPHA ** 0.1, abs=1e-12)
    lo, hi = clopper_pearson(10, 10)
    assert hi == 1.0 and lo == pytest.approx(ALPHA ** 0.1, abs=1e-12)


def test_exact_test_agrees_with_scipy():
    stats = pytest.importorskip("scipy.stats")
    for lost, gained in ((2, 0), (14, 0), (14, 5), (5, 3), (0, 4)):
        t = AccuracyTest(N, lost, gained)
        ref = stats.binomtest(lost, lost + gained, 0.5, alternative="greater")
        assert t.p_value == pytest.approx(ref.pvalue, rel=1e-12)
        ci = stats.binomtest(lost, lost + gained, 0.5).proportion_ci(1 - 2 * ALPHA, "exact")
        assert clopper_pearson(lost, lost + gained) == pytest.approx((ci.low, ci.high), abs=1e-9)


def test_interval_and_verdict_never_disagree():
    """The interval's upper end is below 0 exactly when the one-sided test says 'a real loss'."""
    for lost in range(0, 25):
        for gained in range(0, 8):
            t = AccuracyTest(N, lost, gained)
            if t.discordant:
                assert (t.interval_pp()[1] < 0) == t.significant_loss(), (lost, gained)


def test_two_near_tie_flips_on_192_images_pass():
    """Issue 22: two near-ties that both went the wrong way (−1.04 pp) used to fail |Δacc| <= 1 pp."""
    ref, y = _confident()
    ref, cand = _near_tie_flips(ref, y, [5, 77], keras_right=True)
    c = compare(ref, cand, y, INT8)
    assert (c.task.lost, c.task.gained, c.flips.count, c.flips.near_ties) == (2, 0, 2, 2)
    assert c.task.delta_acc_pp == pytest.approx(-200 / 192)
    assert c.passed, [f.message for f in c.failures]
    test = c.to_dict()["accuracy_test"]
    assert test["p_value"] == 0.25 and not test["significant_loss"]
    lo, hi = test["ci95_delta_acc_pp"]
    assert lo < -1.0 < 0.0 < hi  # the interval says the loss may be as big as the limit, or none at all


def test_losing_14_of_192_fails_even_when_every_flip_is_a_near_tie():
    ref, y = _confident()
    rows = list(range(0, 140, 10))
    ref, cand = _near_tie_flips(ref, y, rows, keras_right=True)
    c = compare(ref, cand, y, INT8)
    assert (c.task.lost, c.task.gained) == (14, 0)
    assert c.flips.near_ties == 14  # so the agreement floor excuses every one of them...
    assert [f.metric for f in c.failures] == ["delta_acc_pp"]  # ...and the paired test does not
    msg = c.failures[0].message
    assert "14 lost, 0 gained" in msg and "p = 6.1e-05" in msg and "-7.29 pp" in msg
    assert c.to_dict()["accuracy_test"]["p_value"] == pytest.approx(2.0 ** -14, rel=1e-3)


def test_losing_14_confident_images_fails_agreement_and_accuracy():
    ref, y = _confident()
    cand = _int8_noise(ref)
    cand[:14] = np.roll(cand[:14], 1, axis=1)  # 14 confident answers moved to another class
    c = compare(ref, cand, y, INT8)
    assert {f.metric for f in c.failures} >= {"top1_agreement", "delta_acc_pp"}


def test_a_gain_in_accuracy_never_fails():
    """Issue 22 run B: onnx-int8 190/192 at +1.04 pp failed the two-sided |Δacc| limit for being better."""
    ref, y = _confident()
    ref, cand = _near_tie_flips(ref, y, [3, 50, 99], keras_right=False)
    c = compare(ref, cand, y, INT8)
    assert (c.task.lost, c.task.gained) == (0, 3) and c.task.delta_acc_pp == pytest.approx(300 / 192)
    assert c.passed, [f.message for f in c.failures]
    assert c.to_dict()["accuracy_test"]["p_value"] == 1.0


def _int8_logits_to_probs(logits: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Softmax of logits fake-quantized to int8 over the calibrated range [lo, hi] (what a PTQ artifact does)."""
    scale = max(hi - lo, 1e-8) / 255.0
    zero = np.round(-128 - lo / scale)
    q = np.clip(np.round(logits / scale + zero), -128, 127)
    deq = (q - zero) * scale
    e = np.exp(deq - deq.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_a_deliberately_bad_calibration_fails():
    """The README's bad artifact, reproduced on a linear classifier: activation ranges calibrated on black
    images (input 0, so the logits' range is the bias alone) clip every real image's logits, while ranges
    calibrated on real images only round them."""
    rng = np.random.default_rng(0)
    w = rng.normal(0, 1, (16, CLASSES))
    bias = np.array([0.3, 0.0, -0.2])
    x = rng.normal(0, 1, (N, 16))
    logits = x @ w + bias
    e = np.exp(logits - logits.max(1, keepdims=True))
    ref = e / e.sum(1, keepdims=True)
    y = ref.argmax(1)  # Keras right everywhere: every flip is a loss
    black = np.zeros((30, 16)) @ w + bias
    bad = compare(ref, _int8_logits_to_probs(logits, black.min(), black.max()), y, INT8)
    good = compare(ref, _int8_logits_to_probs(logits, logits.min(), logits.max()), y, INT8)
    assert good.passed, [f.message for f in good.failures]
    assert not bad.passed
    assert {"top1_agreement", "delta_acc_pp", "snr_db"} <= {f.metric for f in bad.failures}
    assert bad.accuracy_test.p_value < 1e-6


def test_snr_floor_fails_scores_that_are_mostly_noise_even_with_every_top1_kept():
    ref, y = _confident()
    cand = ref.copy()
    cand[:, :] = 1.0 / CLASSES
    cand[np.arange(N), y] += 0.02  # top-1 kept on every image, the scores flattened to chance
    c = compare(ref, cand, y, INT8)
    assert c.task.top1_agree_count == N and c.tensor.snr_db < INT8.min_snr_db
    assert [f.metric for f in c.failures] == ["snr_db"]
    assert math.isclose(c.failures[0].limit, INT8.min_snr_db)


def test_the_verdict_is_the_same_on_every_run():
    ref, y = _confident()
    ref, cand = _near_tie_flips(ref, y, [1, 2, 3, 4, 5], keras_right=True)
    first = compare(ref, cand, y, INT8).to_dict()
    assert all(compare(ref, cand, y, INT8).to_dict() == first for _ in range(3))
    assert first["accuracy_test"]["p_value"] == 2.0 ** -5  # 5 lost: p = 0.031 > 0.025, passes
    assert first["verdict"] == "pass"


def test_a_large_set_with_many_changed_images_gets_a_verdict_not_an_overflow():
    """50,000 images with 1,200 discordant ones (a broken artifact on an ImageNet-sized set): comb(1200, i) is
    past a float's range, which ended parity with OverflowError. Checked against the normal approximation,
    which is accurate at this many discordant images."""
    t = AccuracyTest(50000, 700, 500)
    m, n = 1200, 50000
    z = (700 - m / 2) / math.sqrt(m / 4)
    assert t.p_value == pytest.approx(0.5 * math.erfc(z / math.sqrt(2)), rel=0.15)  # ~5e-9
    half = 1.959963984540054 * math.sqrt(m) / n * 100  # 95 % half-width of Δacc in pp
    lo, hi = t.interval_pp()
    assert lo == pytest.approx(-0.4 - half, abs=0.01) and hi == pytest.approx(-0.4 + half, abs=0.01)
    assert t.significant_loss() and hi < 0
    stats = pytest.importorskip("scipy.stats")
    ci = stats.binomtest(700, m, 0.5).proportion_ci(1 - 2 * ALPHA, "exact")
    assert clopper_pearson(700, m) == pytest.approx((ci.low, ci.high), abs=1e-9)
    assert t.p_value == pytest.approx(stats.binomtest(700, m, 0.5, alternative="greater").pvalue, rel=1e-9)
