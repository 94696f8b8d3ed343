"""The procedural `shapes` dataset: coloured circles, squares and triangles on noisy backgrounds.

Deterministic for a seed, any image size, fast (a few ms per image). Each image has a random
background colour with noise, one filled shape of a random colour that contrasts with the
background, random size (40-80 % of the image), position and (squares, triangles) rotation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CLASSES = ("circle", "square", "triangle")


def _contrasting_colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A darker background and a brighter foreground colour (mean brightness at least 70 apart)."""
    while True:
        bg = rng.integers(0, 150, 3)
        fg = rng.integers(90, 256, 3)
        if fg.mean() - bg.mean() > 70:
            return bg, fg


def _polygon(center: np.ndarray, radius: float, sides: int, angle: float) -> np.ndarray:
    t = angle + np.arange(sides) * 2 * np.pi / sides
    pts = center + radius * np.stack([np.cos(t), np.sin(t)], axis=1)
    return np.round(pts).astype(np.int32)


def draw_shape(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """One BGR uint8 image (size x size x 3) showing a `kind` shape."""
    import cv2

    bg, fg = _contrasting_colours(rng)
    noise = rng.normal(0, 10, (size, size, 3))
    img = np.clip(bg[None, None, :] + noise, 0, 255).astype(np.uint8)
    radius = rng.uniform(0.28, 0.42) * size  # circumradius: the shape spans 56-84 % of the image
    margin = radius + 1
    center = rng.uniform(margin, size - margin, 2) if size - 2 * margin > 0 else np.array([size / 2] * 2)
    colour = tuple(int(c) for c in fg)
    if kind == "circle":
        cv2.circle(img, tuple(int(round(c)) for c in center), int(round(radius)), colour, -1, cv2.LINE_AA)
    elif kind == "square":
        square = _polygon(center, radius, 4, np.pi / 4 + rng.uniform(-0.25, 0.25))  # near axis-aligned
        cv2.fillPoly(img, [square], colour, cv2.LINE_AA)
    elif kind == "triangle":
        triangle = _polygon(center, radius, 3, -np.pi / 2 + rng.uniform(-0.25, 0.25))  # near upright
        cv2.fillPoly(img, [triangle], colour, cv2.LINE_AA)
    else:
        raise ValueError(f"unknown shape '{kind}'")
    return img


def generate(out: Path, image_size: int, counts: dict[str, int], seed: int) -> None:
    """Write out/<split>/<class>/<class>_<i>.png; counts maps split -> images per class."""
    import cv2

    for s_idx, (split, n) in enumerate(counts.items()):
        for c_idx, kind in enumerate(CLASSES):
            # An independent stream per (split, class) so changing one count never shifts the others.
            rng = np.random.default_rng([seed, s_idx, c_idx])
            folder = out / split / kind
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = draw_shape(kind, image_size, rng)
                if not cv2.imwrite(str(folder / f"{kind}_{i:04d}.png"), img):
                    raise OSError(f"could not write {folder / f'{kind}_{i:04d}.png'}")
