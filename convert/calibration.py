"""Calibration images for full-integer quantization, drawn from the run's TRAIN split.

Images are decoded with the runtime's own OpenCV path (`edgeproof.runtime.preprocess.load_image`)
so the quantization ranges are measured on exactly what the deployed model will be fed, after the
same pre-decode check `edgeproof run` and training use: the same files are skipped, with the same
reasons.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from edgeproof.errors import UsageError

MIN_CALIBRATION = 10  # fewer usable images than this gives unreliable int8 ranges


def _as_run(run):
    from edgeproof.convert.source import open_source
    from edgeproof.train.run_dir import Run

    return run if isinstance(run, Run) else open_source(run)


def stratified_order(items: list[tuple[str, int]], seed: int = 0) -> list[tuple[str, int]]:
    """Round-robin over classes (each shuffled with `seed`): any prefix is class-balanced."""
    by_class: dict[int, list[tuple[str, int]]] = {}
    for path, cls in items:
        by_class.setdefault(int(cls), []).append((str(path), int(cls)))
    rng = random.Random(seed)
    queues = []
    for cls in sorted(by_class):
        q = list(by_class[cls])
        rng.shuffle(q)
        queues.append(q)
    order: list[tuple[str, int]] = []
    depth = max((len(q) for q in queues), default=0)
    for i in range(depth):
        order.extend(q[i] for q in queues if i < len(q))
    return order


def require_batch(fmt_name: str, calib: Any) -> None:
    """UsageError unless `calib` is a non-empty float32 (N, H, W, 3) batch: what was received, what is valid,
    what to do (the library's int8 converters take the batch; the CLI makes it from images)."""
    if calib is None:
        got = "none"
    else:
        arr = np.asarray(calib)
        if arr.ndim == 4 and arr.shape[0] > 0 and np.issubdtype(arr.dtype, np.floating):
            return
        got = f"a {arr.dtype} batch of shape {tuple(arr.shape)}"
    raise UsageError(f"{fmt_name} needs calibration images and got {got}; valid: a non-empty float batch "
                     "(N, H, W, C) in model-input space; give it from convert.calibration.calibration_batch, "
                     "or on the command line pass --calib-data DIR (or convert a run folder with a train split)")


def calibration_batch(run, count: int, seed: int = 0) -> tuple[np.ndarray, str, list[tuple[str, str]]]:
    """(batch NHWC float32 in model-input space, sha256 of the batch, skipped [(path, why)]).

    Unreadable images are skipped, counted and replaced by the next image of the stratified order.
    Fewer than min(count, MIN_CALIBRATION) usable images is a UsageError.
    """
    from edgeproof.runtime.preprocess import ImageReadError, load_image

    if int(count) < 1:
        raise UsageError(f"calibration count {count} is not valid; give a positive number such as 200")
    run = _as_run(run)
    try:
        items = run.split("train")
    except UsageError:
        raise UsageError(
            f"run '{run.root}' lists no training images (split.json 'train'); full-integer formats "
            "(tflite-int8, edgetpu, onnx-int8) need them for calibration; retrain with 'edgeproof train' "
            "or convert only float formats (--to tflite-fp32,tflite-fp16,tflite-dynamic,onnx-fp32)"
        ) from None
    arrays: list[np.ndarray] = []
    skipped: list[tuple[str, str]] = []
    for path, _cls in stratified_order(items, seed):
        if len(arrays) >= count:
            break
        try:
            arrays.append(load_image(path, run.preprocess))
        except ImageReadError as exc:
            skipped.append((path, str(exc)))
    need = min(int(count), MIN_CALIBRATION)
    if len(arrays) < need:
        why = f"; {len(skipped)} unreadable skipped, e.g. {skipped[0][0]}: {skipped[0][1]}" if skipped else ""
        where = f"--calib-data '{run.calib_dir}'" if getattr(run, "calib_dir", None) else \
            f"the train split of '{run.root}'"
        raise UsageError(
            f"only {len(arrays)} usable calibration image(s) in {where} "
            f"(need at least {need}{why}); add readable training images or lower --calib-count"
        )
    batch = np.ascontiguousarray(np.stack(arrays).astype(np.float32))
    digest = hashlib.sha256(batch.tobytes()).hexdigest()
    return batch, digest, skipped


def describe(batch: np.ndarray, sha256: str, skipped: list[tuple[str, str]], requested: int,
             folder: str | Path | None = None) -> dict:
    """The calibration record stored in the manifest (`folder`: --calib-data, else the run's train split)."""
    source = f"--calib-data {folder}, stratified by subfolder" if folder else "train split, stratified by class"
    return {"requested": int(requested), "used": len(batch), "sha256": sha256,
            "skipped": len(skipped), "skipped_by_reason": dict(Counter(r for _, r in skipped).most_common()),
            "skipped_files": [{"path": p, "reason": r} for p, r in skipped[:50]],
            "source": f"{source}, decoded with edgeproof.runtime.preprocess",
            **({"folder": str(Path(folder).resolve())} if folder else {})}

