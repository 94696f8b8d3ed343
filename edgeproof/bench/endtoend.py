"""End-to-end benchmark: decode + preprocess + infer on real images or video frames, time per stage.

Stages run serially on one thread so each one's cost is measured on its own; the sum is what a
plain loop pays per image. What the stages do not cover (opening and re-opening a video, the loop
itself) is reported as "other", so the stages add up to the wall time behind ``images_per_s``.
(`edgeproof run` overlaps decode/preprocess with inference in worker
threads, so its throughput can approach the slowest stage instead of the sum.)
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edgeproof.bench import stats
from edgeproof.errors import UsageError
from edgeproof.runtime.sources import IMAGE_EXTS, VIDEO_EXTS

# what counts as an image or a video is the runtime's (`edgeproof run`) own definition
IMAGE_SUFFIXES = tuple(sorted(IMAGE_EXTS))
VIDEO_SUFFIXES = tuple(sorted(VIDEO_EXTS))


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _frames_from_files(files: list[Path], count: int, skipped: list[str],
                       alpha: bool = False) -> Iterator[tuple[np.ndarray, float]]:
    """(BGR frame, decode seconds), cycling over the files until ``count`` frames were produced (BGRA for a
    4-channel model, `alpha`, when the file has one)."""
    from edgeproof.runtime.preprocess import ImageReadError, read_image

    produced = 0
    while produced < count:
        good = 0
        for f in files:
            if produced >= count:
                return
            t0 = time.perf_counter()
            try:
                img = read_image(f, alpha=alpha)
            except ImageReadError as exc:
                if str(f) not in skipped:
                    skipped.append(f"{f}: {exc}")
                continue
            dt = time.perf_counter() - t0
            good += 1
            produced += 1
            yield img, dt
        if good == 0:
            raise UsageError(f"none of the {len(files)} images could be decoded; see the skipped list")


def _frames_from_video(path: Path, count: int) -> Iterator[tuple[np.ndarray, float]]:
    """(BGR frame, grab+decode seconds), reopening the video when it ends before ``count`` frames."""
    import cv2

    produced = 0
    while produced < count:
        cap = cv2.VideoCapture(str(path))
        if not cap.isOpened():
            raise UsageError(f"cannot open video '{path}'; give a readable video file or an image folder")
        got = 0
        try:
            while produced < count:
                t0 = time.perf_counter()
                ok, frame = cap.read()
                dt = time.perf_counter() - t0
                if not ok:
                    break
                got += 1
                produced += 1
                yield frame, dt
        finally:
            cap.release()
        if got == 0:
            raise UsageError(f"video '{path}' has no decodable frames")


def run_end_to_end(model, source: str, count: int, batch: int, infer_only_ips: float | None) -> dict:
    """Images/s for decode + preprocess + infer over ``count`` images from ``source``, with the split."""
    from edgeproof.runtime.preprocess import prepare, wants_alpha

    src = Path(source)
    skipped: list[str] = []
    if src.is_dir():
        files = image_files(src)
        if not files:
            raise UsageError(f"--source folder '{src}' holds no images ({', '.join(IMAGE_SUFFIXES)})")
        frames = _frames_from_files(files, count, skipped, wants_alpha(model.preprocess))
        kind = "folder"
    elif src.is_file() and src.suffix.lower() in VIDEO_SUFFIXES:
        frames, kind = _frames_from_video(src, count), "video"
    elif src.is_file() and src.suffix.lower() in IMAGE_SUFFIXES:
        frames, kind = _frames_from_files([src], count, skipped, wants_alpha(model.preprocess)), "image"
    else:
        raise UsageError(f"--source '{source}' is not an image folder, image or video file "
                         f"(videos: {', '.join(VIDEO_SUFFIXES)})")
    pp = model.preprocess
    decode: list[float] = []
    prep: list[float] = []
    infer: list[float] = []
    pending: list[np.ndarray] = []
    wall0 = time.perf_counter()
    for frame, dt in frames:
        decode.append(dt)
        t0 = time.perf_counter()
        pending.append(prepare(frame, pp))
        prep.append(time.perf_counter() - t0)
        if len(pending) == batch:
            infer.append(_infer(model, pending))
            pending = []
    if pending:
        infer.append(_infer(model, pending))
    wall = time.perf_counter() - wall0
    n = len(decode)
    per_image = {"decode": sum(decode) / n, "preprocess": sum(prep) / n, "infer": sum(infer) / n}
    per_image["other"] = max(wall / n - sum(per_image.values()), 0.0)
    total = sum(per_image.values())
    ips = n / wall if wall > 0 else None
    return {
        "source": str(src), "source_kind": kind, "images": n, "skipped": skipped,
        "images_per_s": ips,
        "stage_ms_per_image": {k: v * 1e3 for k, v in per_image.items()},
        "stage_share": {k: (v / total if total else None) for k, v in per_image.items()},
        "infer_only_images_per_s": infer_only_ips,
        "e2e_vs_infer_only": stats.ratio(ips, infer_only_ips),
    }


def _infer(model, images: list[np.ndarray]) -> float:
    x = np.stack(images)
    t0 = time.perf_counter()
    model.predict(x)
    return time.perf_counter() - t0
