"""Embedded datasets, written as an on-disk image folder (train/ val/ test/ of class subfolders).

    build_dataset("textures")            -> ~/.cache/edgeproof/datasets/textures
    build_dataset("shapes", root=tmp, image_size=32, per_class=60, seed=0)

The folder is built in a temp folder (`.NAME.PID-XXXXXXXX.tmp`, its files fsynced) and swapped into
place in one rename; a `.complete` marker (written last, holding the parameters) makes a rebuild a
no-op, and a folder without it is rebuilt. Temp folders of killed builds are removed by the next one.
Default parameters use the folder `<name>`, others `<name>-<size>px-<per_class>pc-seed<seed>`.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgeproof.atomic import clean_stale, fsync_dir, fsync_file, no_space, replace_dir, temp_dir_beside
from edgeproof.errors import EdgeproofError, UsageError
from edgeproof.paths import cache_dir

MARKER = ".complete"
SPLIT_FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}
GENERATOR_VERSION = 3  # bump when a generator's output changes, so cached folders are rebuilt


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    description: str
    module: str  # edgeproof.train.<module> with generate(out, image_size, counts, seed) and CLASSES
    image_size: int
    per_class: int  # training images per class (val and test each get 15/70 of that)
    needs: str | None = None  # an import the generator needs (for the install hint)


DATASETS: dict[str, DatasetInfo] = {
    "textures": DatasetInfo(
        "textures", "real-photo texture crops from scikit-image's bundled photos, disjoint regions per split",
        "textures", image_size=64, per_class=100, needs="skimage"),
    "shapes": DatasetInfo(
        "shapes", "procedural coloured circles / squares / triangles on noisy backgrounds",
        "shapes", image_size=64, per_class=300),
}


def cache_root() -> Path:
    """$EDGEPROOF_CACHE/datasets, default ~/.cache/edgeproof/datasets."""
    return cache_dir("datasets")


def split_counts(per_class: int) -> dict[str, int]:
    """Images per class in each split: `per_class` for train, val and test 15/70 of that (at least 2)."""
    extra = max(2, round(per_class * SPLIT_FRACTIONS["val"] / SPLIT_FRACTIONS["train"]))
    return {"train": per_class, "val": extra, "test": extra}


def _generator(info: DatasetInfo) -> Callable:
    import importlib

    if info.needs:
        from edgeproof.errors import require

        require(info.needs, "train", f"the '{info.name}' dataset", package="scikit-image")
    return importlib.import_module(f"edgeproof.train.{info.module}").generate


def build_dataset(name: str, root: str | Path | None = None, image_size: int | None = None,
                  per_class: int | None = None, seed: int = 0) -> Path:
    """Write (or reuse) the embedded dataset `name`; return its folder (train/ val/ test/ inside)."""
    if name not in DATASETS:
        raise UsageError(f"unknown dataset '{name}'; valid: {', '.join(DATASETS)}; or pass --data DIR")
    info = DATASETS[name]
    size = int(image_size or info.image_size)
    count = int(per_class or info.per_class)
    if not 8 <= size <= 1024:
        raise UsageError(f"dataset image size {size} is out of range; use 8..1024 pixels")
    if count < 5:
        raise UsageError(f"per_class={count} is too small; use at least 5 training images per class")
    params = {"name": name, "image_size": size, "per_class": count, "seed": int(seed),
              "version": GENERATOR_VERSION}
    parent = Path(root) if root is not None else cache_root()
    default = size == info.image_size and count == info.per_class and seed == 0
    dest = parent / (name if default else f"{name}-{size}px-{count}pc-seed{seed}")
    if _complete(dest, params):
        return dest
    generate = _generator(info)
    try:
        parent.mkdir(parents=True, exist_ok=True)
        clean_stale(parent, dest.name)  # half-built folders of killed earlier builds
        tmp = temp_dir_beside(dest)
    except OSError as exc:
        where = "root" if root is not None else "cache (set EDGEPROOF_CACHE to a writable folder)"
        raise UsageError(f"cannot write the {name} dataset under '{parent}': {exc.strerror or exc}; "
                         f"give a writable dataset {where}") from None
    try:
        generate(tmp, size, split_counts(count), int(seed))
        (tmp / MARKER).write_text(json.dumps(params, sort_keys=True) + "\n")
        make_readable(tmp)
        fsync_tree(tmp)  # a power cut after the rename must not leave empty images behind the marker
        if dest.exists() and _complete(dest, params):  # built concurrently by another process
            shutil.rmtree(tmp, ignore_errors=True)
            return dest
        replace_dir(tmp, dest)  # a partial or stale folder is swapped out in one step
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, Exception) and no_space(exc):
            where = "root" if root is not None else "cache (EDGEPROOF_CACHE)"
            raise EdgeproofError(f"no space left on the device of '{parent}' while building the {name} dataset; "
                                 f"free some space or give another dataset {where}") from None
        raise
    return dest


def make_readable(folder: Path) -> None:
    """mkdtemp/mkstemp create 0700/0600 entries; give the tree the usual umask-based permissions."""
    umask = os.umask(0)
    os.umask(umask)
    for dirpath, _, filenames in os.walk(folder):
        os.chmod(dirpath, 0o777 & ~umask)
        for f in filenames:
            os.chmod(os.path.join(dirpath, f), 0o666 & ~umask)


def fsync_tree(folder: Path) -> None:
    """fsync every file and folder under `folder` (before it is renamed into place)."""
    for dirpath, _, filenames in os.walk(folder):
        for f in filenames:
            fsync_file(os.path.join(dirpath, f))
        fsync_dir(dirpath)


def _complete(dest: Path, params: dict) -> bool:
    try:
        return json.loads((dest / MARKER).read_text()) == params
    except (OSError, ValueError):
        return False
