"""Parity metrics and the gate on synthetic arrays (fast, no TensorFlow)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgeproof.errors import UsageError
from edgeproof.formats import FORMATS, Tolerance
from edgeproof.parity import compare, override
from edgeproof.parity.layer_error import LayerError, channel_snr_db, judge, keras_layer_of, rank
from edgeproof.parity.metrics import confusion_matrix, json_float, min_count_for, task_metrics, tensor_metrics


def _probs(n=60, c=4, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, c)) * 3
    e = np.exp(z - z.max(1, keepdims=True))
    return (e / e.sum(1, keepdims=True)).astype(np.float32)


def test_identical_outputs_are_perfect():
    p = _probs()
    t = tensor_metrics(p, p)
    assert t.max_abs == 0 and t.mean_abs == 0 and t.snr_db == math.inf
    assert t.cosine == pytest.approx(1.0)
    assert t.to_dict()["snr_db"] == "inf"  # JSON has no Infinity


def test_tensor_metrics_values():
    ref = np.array([[1.0, 0.0], [0.0, 1.0]])
    cand = np.array([[0.9, 0.1], [0.0, 1.0]])
    t = tensor_metrics(ref, cand)
    assert t.max_abs == pytest.approx(0.1)
    assert t.mean_abs == pytest.approx(0.05)
    assert t.snr_db == pytest.approx(10 * math.log10(2 / 0.02))
    assert t.cosine == pytest.approx((0.9 / math.hypot(0.9, 0.1) + 1.0) / 2)


def test_task_metrics_counts_and_delta():
    ref = np.eye(3)[[0, 1, 2, 0, 1]]
    cand = np.eye(3)[[0, 1, 2, 1, 1]]
    y = np.array([0, 1, 2, 0, 0])
    k = task_metrics(ref, cand, y)
    assert (k.top1_agree_count, k.n) == (4, 5)
    assert (k.reference_correct, k.correct) == (4, 3)
    assert k.delta_acc_pp == pytest.approx(-20.0)
    assert k.top5_k == 3 and k.top5_agree_count == 5


def test_top5_agreement_is_reference_top1_within_candidate_top5():
    ref = np.zeros((2, 8))
    ref[0, 0] = ref[1, 7] = 1.0
    cand = np.tile(np.linspace(1.0, 0.0, 8), (2, 1))  # candidate top-5 = classes 0..4
    k = task_metrics(ref, cand)
    assert k.top5_k == 5 and k.top5_agree_count == 1
    assert k.accuracy is None and k.delta_acc_pp is None  # no labels, no accuracy


def test_bad_inputs_are_usage_errors():
    with pytest.raises(UsageError, match="shapes differ"):
        tensor_metrics(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(UsageError, match="NaN"):
        tensor_metrics(np.zeros((2, 3)), np.full((2, 3), np.nan))
    with pytest.raises(UsageError, match="labels"):
        task_metrics(np.eye(3), np.eye(3), np.array([0, 1]))


def test_agreement_limit_is_a_count_on_small_sets():
    assert min_count_for(0.99, 60) == 60
    assert min_count_for(0.99, 200) == 198
    assert min_count_for(1.0, 27) == 27


def test_gate_lists_every_failure_with_value_and_limit():
    ref = _probs()
    y = ref.argmax(1)
    cand = ref.copy()
    cand[:8] = np.roll(cand[:8], 1, axis=1)  # eight images change class (and become wrong): p = 2^-8, not chance
    c = compare(ref, cand, y, Tolerance(max_abs=1e-5, min_top1_agreement=0.99, max_delta_acc_pp=1.0, min_snr_db=40))
    assert not c.passed and c.verdict == "fail"
    metrics = {f.metric for f in c.failures}
    assert metrics == {"max_abs", "top1_agreement", "delta_acc_pp", "snr_db"}
    agree = next(f for f in c.failures if f.metric == "top1_agreement")
    assert "52/60" in agree.message and "needs >= 60/60" in agree.message
    assert c.to_dict()["failures"][0]["limit"] is not None


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=list(FORMATS))
def test_each_format_tolerance_passes_identical_and_fails_a_flip(fmt):
    ref = _probs(200)
    assert compare(ref, ref, ref.argmax(1), fmt.tolerance).passed
    cand = ref.copy()
    cand[:5] = np.roll(cand[:5], 1, axis=1)  # 5/200 = 2.5 % flipped: beyond every format's limit
    failed = compare(ref, cand, ref.argmax(1), fmt.tolerance)
    assert not failed.passed
    assert "top1_agreement" in {f.metric for f in failed.failures}


def test_override_replaces_only_the_given_fields():
    tol = override(FORMATS["tflite-int8"].tolerance, max_abs=0.5)
    assert tol.max_abs == 0.5 and tol.min_top1_agreement == FORMATS["tflite-int8"].tolerance.min_top1_agreement
    assert override(tol) is tol


def test_confusion_matrix_and_json_float():
    cm = confusion_matrix(np.array([0, 1, 1]), np.array([0, 0, 1]), 2)
    assert cm.tolist() == [[1, 0], [1, 1]]
    assert json_float(float("nan")) == "nan" and json_float(1.5) == 1.5


def test_channel_snr_flags_outlier_channels_that_rmse_scale_misses():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(64, 16)).astype(np.float32)
    f[:, :2] *= 3000  # two outlier channels set the per-tensor scale
    scale = (f.max() - f.min()) / 255
    dq = np.round(f / scale) * scale
    snr = channel_snr_db(f, dq)
    rms = float(np.sqrt(np.mean((f - dq) ** 2)) / scale)
    assert snr < 3.0 and rms < 0.7  # rmse/scale alone would call this layer healthy
    le = judge(LayerError("t", "FULLY_CONNECTED", "dense", rms, snr, scale))
    assert le.suspect and "channel SNR" in le.reason
    g = f[:, 2:]
    s2 = float(np.ptp(g)) / 255
    assert channel_snr_db(g, np.round(g / s2) * s2) > 30


def test_rank_and_layer_names():
    a = LayerError("a", "CONV_2D", "conv", 0.3, 40.0, 1.0)
    b = judge(LayerError("b", "FULLY_CONNECTED", "fc", 0.2, 1.0, 1.0))
    assert [le.tensor for le in rank([a, b])] == ["b", "a"]
    names = ["dense", "outlier_dense", "head"]
    assert keras_layer_of("functional_1/outlier_dense_1/MatMul1", names) == "outlier_dense"
    assert keras_layer_of("functional_1/outlier_dense_1/BiasAdd;functional_1/head_1/MatMul;"
                          "functional_1/head_1/BiasAdd", names) == "head"
    assert keras_layer_of("StatefulPartitionedCall_1:0", names) is None


def test_rank_names_the_upstream_layer_when_collapsed_channels_tie():
    """Measured on textures: the head reading outlier_dense's collapsed tensor collapses too, with a
    larger rmse/scale; the layer to name (and denylist first) is outlier_dense, upstream."""
    graph = [judge(LayerError("conv", "CONV_2D", "conv", 0.138, 9.2, 1.0)),
             judge(LayerError("od", "FULLY_CONNECTED", "outlier_dense", 0.119, 0.0, 1.0)),
             judge(LayerError("hd", "FULLY_CONNECTED", "head", 2.70, 0.0, 1.0)),
             judge(LayerError("gap", "MEAN", "gap", 0.209, 25.0, 1.0)),
             judge(LayerError("big", "ADD", "add", 1.5, None, 1.0))]
    assert [le.layer for le in rank(graph)] == ["outlier_dense", "head", "conv", "add", "gap"]
    # rmse/scale still orders suspects that did not collapse
    assert [le.tensor for le in rank([judge(LayerError("x", "ADD", None, 0.9, None, 1.0)),
                                      judge(LayerError("y", "ADD", None, 3.0, None, 1.0))])] == ["y", "x"]


def test_an_artifact_no_backend_could_run_fails_the_gate(tmp_path):
    from edgeproof.parity.runner import Row
    from edgeproof.parity.session import _unverified

    p = tmp_path / "model.tflite-int8.tflite"
    rows = [Row(p.name, p, "tflite-int8", "litert", "skipped", "backend not installed: pip install ai-edge-litert"),
            Row(p.name, p, "tflite-int8", "openvino", "unsupported", "cannot read it"),
            Row("model.onnx-fp32.onnx", p, "onnx-fp32", "opencv", "unsupported", "cannot read it")]
    ref = _probs()
    rows[2].comparison = compare(ref, ref, None, FORMATS["onnx-fp32"].tolerance)
    fails = _unverified(rows)
    assert [f.artifact for f in fails] == ["model.tflite-int8.tflite"]
    assert "not verified" in fails[0].message and "pip install ai-edge-litert" in fails[0].message
