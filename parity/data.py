"""Which images parity runs on: the run's held-out split, or a folder the user gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeproof.errors import UsageError
from edgeproof.parity.runner import Images
from edgeproof.runtime.sources import IMAGE_EXTS as IMAGE_SUFFIXES  # the runtime's definition of an image


def from_run(run, split: str) -> Images:
    items = run.split(split)  # raises a UsageError naming the splits that exist
    paths = [p for p, _ in items]
    labels = np.asarray([c for _, c in items], dtype=np.int64)
    return Images(paths=paths, labels=labels, source=f"{run.root} split '{split}' ({len(paths)} images)")


def _images_in(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def from_dir(folder: str | Path, labels: list[str], split: str) -> Images:
    """DIR/<split>/<class>/*, DIR/<class>/* (labelled, class names must be the run's) or DIR/* (unlabelled)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"--data '{folder}' is not a folder; give an image folder (class subfolders or images)")
    if (folder / split).is_dir():
        folder = folder / split
    subdirs = sorted(p for p in folder.iterdir() if p.is_dir())
    if subdirs:
        index = {name: i for i, name in enumerate(labels)}
        unknown = [d.name for d in subdirs if d.name not in index]
        if unknown:
            raise UsageError(f"--data '{folder}': class folder(s) {', '.join(unknown)} are not classes of this model "
                             f"(classes: {', '.join(labels)}); rename them or pass a folder of images")
        paths, ys = [], []
        for d in subdirs:
            files = _images_in(d)
            paths += files
            ys += [index[d.name]] * len(files)
        y: np.ndarray | None = np.asarray(ys, dtype=np.int64)
    else:
        paths, y = _images_in(folder), None
    if not paths:
        raise UsageError(f"--data '{folder}' holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    kind = "labelled" if y is not None else "unlabelled: accuracy not computed"
    return Images(paths=paths, labels=y, source=f"{folder} ({len(paths)} images, {kind})")
