"""The page's own JavaScript preprocessing against the runtime's OpenCV path, on the same files (browser parity).

The browser rows of `parity --backends ...,litertjs,ort-web` get the tensors OpenCV prepared, like every other
backend, so they measure the runtimes alone. This check measures the rest of what a phone does: each raw file
goes through the page's decode (createImageBitmap) and engine.js's resize/normalization, and Keras scores both
tensors. The gap is the JavaScript preprocessing drift, reported apart, as e2e.py does for TF against OpenCV.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeproof.contract import Preprocess
from edgeproof.parity.e2e import pixel_stats
from edgeproof.parity.metrics import task_metrics, tensor_metrics

WHAT = "Keras(page's JavaScript decode + preprocessing, headless Chromium) vs Keras(OpenCV runtime preprocessing)"


def summary(pre: dict) -> str:
    """One line for the CLI and parity.md."""
    if pre.get("error"):
        return f"the page's JavaScript preprocessing: not measured ({pre['error']})"
    return (f"the page's JavaScript preprocessing vs OpenCV ({pre['browser']}, {pre['n']} files): pixels max |Δ| "
            f"{pre['pixels_max_abs']:.2f}, {pre['pixels_identical_fraction']:.1%} identical; probabilities max |Δ| "
            f"{pre['probs_max_abs']:.3g}, top-1 changed {pre['top1_changed']}/{pre['n']}")


def page_preprocessing_drift(keras_model, paths: list[str], pp: Preprocess, x_cv: np.ndarray, ref_cv: np.ndarray,
                             labels: np.ndarray | None, artifacts: list[Path]) -> dict:
    """The drift report; `artifacts`: candidates whose metadata carries the run's contract (the page needs one)."""
    import tempfile

    from edgeproof.errors import EdgeproofError, UsageError
    from edgeproof.parity.reference import predict
    from edgeproof.runtime.web.browser import Page, missing_browser
    from edgeproof.runtime.web.site import build, model_entry

    why = missing_browser()
    if why:
        return {"what": WHAT, "error": why}
    usable = []
    for a in artifacts:
        try:
            if Preprocess.from_dict(model_entry(a)["preprocess"]) == pp:
                usable.append(a)
        except UsageError:
            continue
    if not usable:
        return {"what": WHAT, "error": "no artifact the page can run carries the run's preprocessing contract"}
    with tempfile.TemporaryDirectory(prefix="edgeproof-page-pre-") as tmp:
        site = build(usable[:1], Path(tmp) / "site")
        page = Page(site.folder, "index.html?driver")
        try:
            x_js = np.stack([page.preprocess(0, Path(p).read_bytes()) for p in paths])
            browser = page.browser
        except EdgeproofError as exc:
            return {"what": WHAT, "error": str(exc)}
        finally:
            page.close()
    ref_js = predict(keras_model, x_js)
    pix = pixel_stats(x_js, x_cv)
    tm, km = tensor_metrics(ref_cv, ref_js), task_metrics(ref_cv, ref_js, labels)
    return {"what": WHAT, "browser": f"Chromium {browser}", "n": km.n,
            "pixels_max_abs": pix["max"], "pixels_mean_abs": pix["sum"] / pix["n"] if pix["n"] else 0.0,
            "pixels_identical_fraction": pix["identical"] / pix["n"] if pix["n"] else 1.0,
            **{f"probs_{k}": v for k, v in tm.to_dict().items()}, "top1_changed": km.n - km.top1_agree_count}
