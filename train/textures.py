"""The real-photo `textures` dataset: crops of photos bundled with scikit-image (no network).

Each class is one photo (twelve, some deliberately close: see SOURCES). Every photo is cut into three horizontal bands, top 60 % for train,
next 20 % for val, bottom 20 % for test, and a split's crops are taken only from its own band,
so no pixel of a test image was ever seen in training. Crops have a random window size (80-100 %
of the base window), position and flips, and are resized (INTER_AREA) to the dataset image size,
so training at that size needs no further resizing. Grey photos are written as 8-bit grey PNGs
and colour ones as PNG or JPEG, which exercises the loader's conversions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

BANDS = {"train": (0.0, 0.6), "val": (0.6, 0.8), "test": (0.8, 1.0)}


@dataclass(frozen=True)
class Source:
    cls: str
    loader: str  # skimage.data function name
    ext: str  # ".png" or ".jpg"
    window: float  # base crop window as a fraction of the usable photo's shorter side
    inset: float = 0.0  # fraction cut from every edge first (e.g. the retina photo's black border)


# Twelve classes, several of them close on purpose (three grey stone/plant textures; two printed-text scans;
# two grey microscopy/coin photos; three dark starry/fundus/stained-tissue colour photos), cut into small windows
# (about a tenth of the photo) so a crop shows a patch of texture rather than the whole scene: a small CNN
# reaches roughly 85-95 % on the test band, and the parity report has near-ties and real flips to show.
SOURCES = (
    Source("brick", "brick", ".png", 0.11),
    Source("grass", "grass", ".png", 0.11),
    Source("gravel", "gravel", ".png", 0.11),
    Source("moon", "moon", ".png", 0.11),
    Source("coins", "coins", ".png", 0.14),
    Source("cell", "cell", ".png", 0.11),
    Source("page", "page", ".png", 0.22),
    Source("text", "text", ".png", 0.24),
    Source("ihc", "immunohistochemistry", ".png", 0.11),
    Source("hubble", "hubble_deep_field", ".jpg", 0.09),
    Source("retina", "retina", ".jpg", 0.08, inset=0.25),
    Source("cat", "chelsea", ".jpg", 0.14),
)
CLASSES = tuple(s.cls for s in SOURCES)


def load_photo(src: Source) -> np.ndarray:
    """The photo as uint8 grey HxW or BGR HxWx3, inset applied."""
    import cv2
    from skimage import data as skdata

    img = np.asarray(getattr(skdata, src.loader)())
    if img.dtype != np.uint8:
        img = np.clip(img * (255.0 if img.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    if img.ndim == 3:
        img = cv2.cvtColor(img[..., :3], cv2.COLOR_RGB2BGR)
    if src.inset:
        h, w = img.shape[:2]
        dy, dx = int(h * src.inset), int(w * src.inset)
        img = img[dy:h - dy, dx:w - dx]
    return img


def crop(photo: np.ndarray, band: tuple[float, float], window: int, size: int,
         rng: np.random.Generator) -> np.ndarray:
    """A random crop lying wholly inside the band's rows, resized to size x size."""
    import cv2

    h, w = photo.shape[:2]
    top, bottom = int(round(band[0] * h)), int(round(band[1] * h))
    win = int(round(window * rng.uniform(0.8, 1.0)))
    win = max(4, min(win, bottom - top, w))
    y = int(rng.integers(top, bottom - win + 1))
    x = int(rng.integers(0, w - win + 1))
    patch = photo[y:y + win, x:x + win]
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    if rng.random() < 0.5:
        patch = patch[::-1, :]
    interp = cv2.INTER_AREA if win >= size else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(patch), (size, size), interpolation=interp)


def generate(out: Path, image_size: int, counts: dict[str, int], seed: int) -> None:
    """Write out/<split>/<class>/<class>_<i>.<ext>; counts maps split -> images per class."""
    import cv2

    for c_idx, src in enumerate(SOURCES):
        photo = load_photo(src)
        window = src.window * min(photo.shape[:2])
        for s_idx, (split, n) in enumerate(counts.items()):
            rng = np.random.default_rng([seed, s_idx, c_idx])
            folder = out / split / src.cls
            folder.mkdir(parents=True, exist_ok=True)
            params = [cv2.IMWRITE_JPEG_QUALITY, 92] if src.ext == ".jpg" else []
            for i in range(n):
                img = crop(photo, BANDS[split], int(window), image_size, rng)
                path = folder / f"{src.cls}_{i:04d}{src.ext}"
                if not cv2.imwrite(str(path), img, params):
                    raise OSError(f"could not write {path}")


def crop_regions(photo_shape: tuple[int, int], split: str) -> tuple[int, int]:
    """The [top, bottom) rows a split may use in a photo of this shape (for tests and docs)."""
    h = photo_shape[0]
    band = BANDS[split]
    return int(round(band[0] * h)), int(round(band[1] * h))
