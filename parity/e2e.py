"""End-to-end parity: preprocessing drift (training's TF decode/resize vs the runtime's OpenCV path).

The same files go through (a) `edgeproof.train.data.load_image_tf` and (b)
`edgeproof.runtime.preprocess.load_image`, both into the Keras model. The gap between those two
Keras outputs is preprocessing drift; the gap between Keras(b) and each artifact(b) is conversion
drift. Both are reported with the same metrics, and the report says which one dominates.
"""

from __future__ import annotations

import numpy as np

from edgeproof.contract import Preprocess
from edgeproof.parity.metrics import task_metrics, tensor_metrics

_LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # contract.GRAY_FORMULA, ITU-R BT.601


def tf_batch(paths: list[str], pp: Preprocess) -> tuple[np.ndarray, list[int], list[tuple[str, str]]]:
    """The training pipeline's decode/resize, then the contract's channels (gray: contract.GRAY_FORMULA on TF's
    RGB), colour order and normalization.

    Returns (batch, indices of the decoded paths, skipped [(path, why)]): TF cannot decode every
    file OpenCV can (e.g. TIFF), and such files are left out of the comparison, not fatal.
    """
    from edgeproof.runtime.preprocess import normalize
    from edgeproof.train.data import load_image_tf

    out, used, skipped = [], [], []
    for i, p in enumerate(paths):
        try:
            x = load_image_tf(p, pp.height, pp.width, pp.interpolation, pp.channels)  # RGB(A) float32 0..255
        except Exception as exc:  # noqa: BLE001 - reported per file
            skipped.append((p, str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__))
            continue
        if pp.channels == 1:
            x = x @ _LUMA[:, None]
        elif pp.color == "BGR":
            x = np.concatenate([x[..., 2::-1], x[..., 3:]], axis=-1)
        out.append(normalize(x.astype(np.float32), pp))  # the runtime's own normalization
        used.append(i)
    batch = np.stack(out) if out else np.zeros((0, pp.height, pp.width, pp.channels), np.float32)
    return batch, used, skipped


def tf_side(keras_model, paths: list[str], pp: Preprocess, x_cv: np.ndarray):
    """The per-image half (any subset of the images, e.g. one Ray batch): Keras on the TF decode of `paths`.

    Returns (Keras probabilities of the decoded ones, their indices, skipped [(path, why)], pixel stats vs x_cv)."""
    from edgeproof.parity.reference import predict

    x_tf, used, skipped = tf_batch(paths, pp)
    if not used:
        return np.zeros((0, 0), np.float32), used, skipped, pixel_stats(x_tf, x_tf)
    return predict(keras_model, x_tf), used, skipped, pixel_stats(x_tf, x_cv[np.asarray(used)])


def pixel_stats(x_tf: np.ndarray, x_cv: np.ndarray) -> dict:
    """|TF pixels - OpenCV pixels| as sums, so parts computed apart (Ray batches) add up to the whole."""
    pix = np.abs(x_tf.astype(np.float64) - x_cv.astype(np.float64))
    return {"max": float(pix.max()) if pix.size else 0.0, "sum": float(pix.sum()), "n": int(pix.size),
            "identical": int(np.count_nonzero(pix == 0))}


def merge_pixel_stats(parts: list[dict]) -> dict:
    return {"max": max((p["max"] for p in parts), default=0.0), "sum": sum(p["sum"] for p in parts),
            "n": sum(p["n"] for p in parts), "identical": sum(p["identical"] for p in parts)}


def drift_report(ref_tf: np.ndarray, used: list[int], skipped: list[tuple[str, str]], pix: dict,
                 ref_cv: np.ndarray, labels: np.ndarray | None, rows=()) -> dict:
    """The whole-set half: the report from tf_side's results (merged over the parts) and the OpenCV-path run."""
    if not used:
        return {"what": "Keras(TF decode/resize) vs Keras(OpenCV runtime preprocessing), same files",
                "n": 0, "skipped": len(skipped), "error": "TensorFlow could not decode any of the images",
                "probs_mean_abs": 0.0, "top1_changed": 0}
    idx = np.asarray(used)
    ref_cv = ref_cv[idx]
    labels = labels[idx] if labels is not None else None
    tm = tensor_metrics(ref_tf, ref_cv)
    km = task_metrics(ref_tf, ref_cv, labels)
    return {
        "what": "Keras(TF decode/resize) vs Keras(OpenCV runtime preprocessing), same files",
        "pixels_max_abs": pix["max"],
        "pixels_mean_abs": pix["sum"] / pix["n"] if pix["n"] else 0.0,
        "pixels_identical_fraction": pix["identical"] / pix["n"] if pix["n"] else 1.0,
        **{f"probs_{k}": v for k, v in tm.to_dict().items()},
        "top1_changed": km.n - km.top1_agree_count,
        "n": km.n,
        "skipped": len(skipped),
        "skipped_files": [{"path": p, "reason": r} for p, r in skipped[:20]],
        "accuracy_tf_decode": km.reference_accuracy,
        "accuracy_opencv": km.accuracy,
        "delta_acc_pp": km.delta_acc_pp,
        "end_to_end": _end_to_end(ref_tf, idx, rows),
    }


def _end_to_end(ref_tf: np.ndarray, idx: np.ndarray, rows) -> list[dict]:
    """What deployment changes overall: each artifact on the runtime path vs Keras on the training path."""
    out = []
    for r in rows:
        if getattr(r, "probs", None) is None:
            continue
        cand = r.probs[idx]
        tm = tensor_metrics(ref_tf, cand)
        km = task_metrics(ref_tf, cand)
        out.append({"artifact": r.artifact, "backend": r.backend, "max_abs": tm.max_abs, "mean_abs": tm.mean_abs,
                    "top1_changed": km.n - km.top1_agree_count, "n": km.n})
    return out


def dominance(pre: dict, rows) -> dict:
    """Compare preprocessing drift with each artifact's conversion drift (mean |Δ| of probabilities)."""
    if pre.get("error"):
        return {"dominant": "unknown", "verdict": f"preprocessing drift not measured: {pre['error']}",
                "artifacts_above_preprocessing": [], "artifacts_below_preprocessing": []}
    pre_mean = float(pre["probs_mean_abs"])
    conv = [(r.artifact, r.backend, r.comparison.tensor.mean_abs, r.comparison.task.n - r.comparison.task.top1_agree_count)
            for r in rows if r.comparison is not None]
    larger = [c for c in conv if c[2] > pre_mean]
    smaller = [c for c in conv if c[2] <= pre_mean]
    worst = max(conv, key=lambda c: c[2]) if conv else None
    if worst is None:
        verdict = "no artifact ran; only preprocessing drift measured"
        dominant = "preprocessing"
    elif worst[2] > pre_mean:
        dominant = "conversion"
        verdict = (f"conversion drift dominates for {len(larger)}/{len(conv)} artifact×backend(s) — worst "
                   f"{worst[0]} [{worst[1]}] mean |Δ| {worst[2]:.3g} ({worst[3]} top-1 change(s)) vs preprocessing "
                   f"{pre_mean:.3g} ({pre['top1_changed']} top-1 change(s))")
    else:
        dominant = "preprocessing"
        verdict = (f"preprocessing drift dominates: mean |Δ| {pre_mean:.3g} ({pre['top1_changed']}/{pre['n']} "
                   f"top-1 change(s)) exceeds every artifact's conversion drift (worst {worst[0]} [{worst[1]}] "
                   f"{worst[2]:.3g})")
    return {"dominant": dominant, "verdict": verdict,
            "artifacts_above_preprocessing": [f"{a} [{b}]" for a, b, _, _ in larger],
            "artifacts_below_preprocessing": [f"{a} [{b}]" for a, b, _, _ in smaller]}
