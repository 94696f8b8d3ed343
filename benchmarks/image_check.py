"""Cost of the pre-decode image check (runtime/image_check.py) next to the decode it guards.

For each set of files, interleaved rounds time
  plain:   np.fromfile + cv2.imdecode (the reader before the check existed)
  checked: edgeproof.runtime.preprocess.read_image (stat, read, check_bytes, cv2.imdecode)
  check:   image_check.check_file alone (stat, read, sniff/header walk/tail look)
and print the medians per image and the ratio checked / plain.

    python benchmarks/image_check.py [--rounds 15]

Sets: the embedded `textures` dataset at 64 px (JPEG and PNG), and a 1-megapixel photo-like JPEG and PNG
(1152x864 smooth noise, JPEG quality 90).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from edgeproof.runtime import image_check
from edgeproof.runtime.preprocess import read_image


def plain(path: Path) -> np.ndarray:
    return cv2.imdecode(np.fromfile(str(path), np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)


def time_per_image(fn, paths: list[Path]) -> float:
    t = time.perf_counter()
    for p in paths:
        fn(p)
    return (time.perf_counter() - t) / len(paths) * 1e6  # microseconds


def big_images(folder: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.integers(0, 255, (864, 1152, 3), dtype=np.uint8), (0, 0), 3)
    img = cv2.addWeighted(img, 0.8, rng.integers(0, 60, img.shape, dtype=np.uint8), 0.2, 0)
    out = []
    for ext, params in ((".jpg", [cv2.IMWRITE_JPEG_QUALITY, 90]), (".png", [])):
        p = folder / f"photo_1mp{ext}"
        cv2.imwrite(str(p), img, params)
        out.append(p)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    from edgeproof.train.datasets import build_dataset

    root = build_dataset("textures", image_size=64)
    small = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".png"))
    tmp = Path(tempfile.mkdtemp(prefix="edgeproof-imgcheck-"))
    jpg, png = big_images(tmp)
    sets = {
        f"textures 64 px JPEG ({sum(p.suffix == '.jpg' for p in small)} files)": [p for p in small if p.suffix == ".jpg"],
        f"textures 64 px PNG ({sum(p.suffix == '.png' for p in small)} files)": [p for p in small if p.suffix == ".png"],
        f"1 MP JPEG ({jpg.stat().st_size // 1024} KiB) x20": [jpg] * 20,
        f"1 MP PNG ({png.stat().st_size // 1024} KiB) x20": [png] * 20,
    }
    print(f"OpenCV {cv2.__version__}, 1 thread, {args.rounds} interleaved rounds, medians in µs/image\n")
    print(f"{'set':<34} {'plain':>9} {'checked':>9} {'check':>8} {'checked/plain':>14}")
    for name, paths in sets.items():
        paths = [p for p in paths if p.stat().st_size]
        assert all(read_image(p) is not None for p in paths[:5])
        runs: dict[str, list[float]] = {"plain": [], "checked": [], "check": []}
        for _ in range(args.rounds):
            runs["plain"].append(time_per_image(plain, paths))
            runs["checked"].append(time_per_image(read_image, paths))
            runs["check"].append(time_per_image(image_check.check_file, paths))
        m = {k: statistics.median(v) for k, v in runs.items()}
        print(f"{name:<34} {m['plain']:9.1f} {m['checked']:9.1f} {m['check']:8.1f} {m['checked'] / m['plain']:13.3f}x")


if __name__ == "__main__":
    main()
