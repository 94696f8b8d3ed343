"""Training data: scan a folder of class subfolders, validate and decode every image, split, feed.

Layouts:  DIR/<class>/...images   -> stratified seeded 70/15/15 split of the readable images;
          DIR/train/<class>/... (+ val/, test/) -> used as given; a missing val/ or test/ is carved
          (stratified, 15 %) out of train.
Images are decoded once with the runtime's OpenCV reader (gray, RGBA, palette, 16-bit converted;
EXIF applied) and resized with the same `prepare` the runtime uses, so training sees exactly what
deployment sees. Every file goes through the runtime's one pre-decode check (runtime/image_check.py:
zero-byte, not an image, truncated JPEG/PNG, too many pixels, ...), so training, calibration and
`edgeproof run` skip the same files with the same reasons, counted by reason. Datasets here are small, so
the decoded uint8 arrays live in memory (capped by EDGEPROOF_MAX_DATA_GB, default 8) and a
tf.data pipeline shuffles, augments and batches them.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeproof.contract import Preprocess
from edgeproof.errors import UsageError

SPLITS = ("train", "val", "test")
FRACTIONS = {"val": 0.15, "test": 0.15}
HINT = "give a folder with one subfolder of images per class (or use --dataset textures|shapes)"


@dataclass
class Split:
    paths: list[str]
    labels: np.ndarray  # int64 (N,)
    images: np.ndarray  # uint8 (N, H, W, 3) RGB, already at the model input size


@dataclass
class Data:
    root: Path
    classes: list[str]
    layout: str  # "folders" (train/ val/ test/ given) or "split" (seeded 70/15/15)
    splits: dict[str, Split]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    def skipped_summary(self) -> dict[str, int]:
        return dict(Counter(reason for _, reason in self.skipped).most_common())

    def split_json(self, seed: int) -> dict:
        return {"data_root": str(self.root.resolve()), "classes": self.classes, "seed": seed,
                "layout": self.layout,
                "splits": {k: [[p, int(i)] for p, i in zip(s.paths, s.labels, strict=True)]
                           for k, s in self.splits.items()},
                "skipped": [[p, r] for p, r in self.skipped]}


# ---------------------------------------------------------------- validation and decoding

def decode_all(paths: list[str], pp: Preprocess, on_done: Callable[[int], None] | None = None
               ) -> tuple[list[np.ndarray | None], list[str | None]]:
    """Decode + prepare every path (threads: OpenCV releases the GIL) -> (uint8 RGB images, skip reasons)."""
    from edgeproof.runtime.preprocess import ImageReadError, prepare, quiet_opencv, read_image

    quiet_opencv()  # no libpng/libjpeg warnings from the worker threads

    def one(path: str):
        try:
            return prepare(read_image(path), pp).astype(np.uint8), None
        except ImageReadError as exc:
            return None, str(exc)

    images, reasons = [], []
    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        for img, reason in pool.map(one, paths, chunksize=16):
            images.append(img)
            reasons.append(reason)
            if on_done:
                on_done(1)
    return images, reasons


# ---------------------------------------------------------------- folder scan

def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _absolute(path: Path) -> str:
    """The resolved path; a symlink loop (RuntimeError/OSError from resolve()) stays as its absolute
    name, so the image check skips it with its reason instead of the scan failing."""
    try:
        return str(path.resolve())
    except (RuntimeError, OSError):
        return os.path.abspath(path)


def _files(folder: Path) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out.extend(_absolute(Path(dirpath, f)) for f in sorted(filenames) if not f.startswith("."))
    return out


def scan(root: str | Path) -> tuple[str, list[str], dict[str, dict[str, list[str]]]]:
    """Return (layout, classes, {split or "all": {class: [abs paths]}}) or raise UsageError."""
    root = Path(root)
    if not root.exists():
        raise UsageError(f"data folder '{root}' does not exist; {HINT}")
    if not root.is_dir():
        raise UsageError(f"data path '{root}' is a file, not a folder; {HINT}")
    subdirs = _subdirs(root)
    names = {d.name for d in subdirs}
    if names and names <= set(SPLITS):
        if "train" not in names:
            raise UsageError(f"data folder '{root}' has {'/'.join(sorted(names))}/ but no train/; "
                             "add train/<class>/ images or drop the split folders")
        classes = [d.name for d in _subdirs(root / "train")]
        _check_classes(root / "train", classes)
        tree: dict[str, dict[str, list[str]]] = {}
        for split in SPLITS:
            if split not in names:
                continue
            found = [d.name for d in _subdirs(root / split)]
            extra = sorted(set(found) - set(classes))
            if extra:
                raise UsageError(
                    f"'{root / split}' has class folder(s) {', '.join(extra)} that train/ lacks; "
                    f"train classes: {', '.join(classes)}; use the same class names in every split")
            tree[split] = {c: _files(root / split / c) for c in classes if c in found}
        return _check_files(root, classes, ("folders", classes, tree))
    classes = [d.name for d in subdirs]
    _check_classes(root, classes)
    return _check_files(root, classes, ("split", classes, {"all": {c: _files(root / c) for c in classes}}))


def _check_files(root: Path, classes: list[str], scanned: tuple) -> tuple:
    if not any(files for per_class in scanned[2].values() for files in per_class.values()):
        raise UsageError(f"data folder '{root}' has class folders ({', '.join(classes)}) but no files; {HINT}")
    return scanned


def _check_classes(folder: Path, classes: list[str]) -> None:
    if not classes:
        loose = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
        what = f"no class subfolders, only {len(loose)} loose file(s)" if loose else "empty"
        raise UsageError(f"data folder '{folder}' is {what}; {HINT}")
    if len(classes) == 1:
        raise UsageError(f"data folder '{folder}' has a single class ('{classes[0]}'); "
                         "a classifier needs at least 2 class subfolders")
    from edgeproof.text import printable

    odd = next((c for c in classes if printable(c) != c), None)
    if odd is not None:  # labels.txt holds one class per line: a newline in a name adds a class
        raise UsageError(f"class folder '{printable(odd)}' in '{printable(folder)}' has a control character "
                         "(newline, tab, escape) in its name; rename it: class names become labels.txt lines "
                         "and are shown on terminals")


# ---------------------------------------------------------------- splitting and loading

def _carve(items: list[int], frac: float, rng: np.random.Generator,
           keep: int = 1) -> tuple[list[int], list[int]]:
    """Split items into (rest, carved) with round(frac*n) carved (at least 1 while `keep` remain)."""
    n = len(items)
    k = min(max(1, round(frac * n)), n - keep) if n > keep else 0
    perm = [items[i] for i in rng.permutation(n)]
    return sorted(perm[k:]), sorted(perm[:k])


def _describe(reasons: list[str]) -> str:
    return ", ".join(f"{n} {r}" for r, n in Counter(reasons).most_common())


def load_data(root: str | Path, pp: Preprocess, seed: int = 0,
              on_total: Callable[[int], None] | None = None,
              on_done: Callable[[int], None] | None = None, scanned: tuple | None = None) -> Data:
    """Scan (unless `scanned`, scan(root)'s result), decode, validate and split `root`; raise
    UsageError on unusable input."""
    root = Path(root)
    layout, classes, tree = scanned if scanned is not None else scan(root)
    flat = [(group, ci, p) for group, per_class in tree.items()
            for ci, c in enumerate(classes) for p in per_class.get(c, [])]
    need = len(flat) * pp.height * pp.width * 3
    limit = int(float(os.environ.get("EDGEPROOF_MAX_DATA_GB", "8")) * 2**30)
    if need > limit:
        raise UsageError(f"{len(flat)} images at {pp.height}x{pp.width} need {need / 2**30:.1f} GiB "
                         "in memory, "
                         f"over the {limit / 2**30:.0f} GiB limit; use a smaller --img-size or a subset "
                         "(or raise EDGEPROOF_MAX_DATA_GB)")
    if on_total:
        on_total(len(flat))
    images, reasons = decode_all([p for _, _, p in flat], pp, on_done)
    skipped = [(p, r) for (_, _, p), r in zip(flat, reasons, strict=True) if r]
    if len(skipped) == len(flat):
        raise UsageError(f"no readable images in '{root}': all {len(flat)} files were skipped "
                         f"({_describe([r for _, r in skipped])}); {HINT}")
    # group -> class -> indices into flat of readable images
    ok: dict[str, dict[int, list[int]]] = {}
    for i, ((group, ci, _), img) in enumerate(zip(flat, images, strict=True)):
        if img is not None:
            ok.setdefault(group, {}).setdefault(ci, []).append(i)
    first = "train" if layout == "folders" else "all"
    for ci, c in enumerate(classes):
        if not ok.get(first, {}).get(ci):
            bad = [r for (g, cj, _), r in zip(flat, reasons, strict=True) if g == first and cj == ci and r]
            where = root / ("train" if layout == "folders" else "") / c
            raise UsageError(f"class '{c}' has no readable images in '{where}'"
                             f"{f' ({_describe(bad)} skipped)' if bad else ' (no files)'}; "
                             "add images to it or remove the folder")
    chosen: dict[str, list[int]] = {s: [] for s in SPLITS}
    for ci, c in enumerate(classes):
        rng = np.random.default_rng([seed, ci])
        if layout == "split":
            items = ok["all"][ci]
            if len(items) < 3:
                raise UsageError(f"class '{c}' has only {len(items)} readable image(s); need at least 3 to "
                                 "split into train/val/test (or give train/ val/ test/ subfolders)")
            rest, test = _carve(items, FRACTIONS["test"], rng, keep=2)
            train, val = _carve(rest, FRACTIONS["val"] / (1 - FRACTIONS["test"]), rng)
            parts = {"train": train, "val": val, "test": test}
        else:
            train = ok["train"][ci]
            parts = {}
            for split in ("test", "val"):  # carve the missing ones out of train
                if "val" not in tree and "test" not in tree:
                    frac = FRACTIONS[split] / (1 - FRACTIONS["test"]) if split == "val" else FRACTIONS[split]
                else:
                    frac = FRACTIONS[split]
                if split in tree:
                    parts[split] = ok.get(split, {}).get(ci, [])
                else:
                    train, parts[split] = _carve(train, frac, rng)
            parts["train"] = train
        for split in SPLITS:
            chosen[split].extend(parts[split])
    for split in ("train", "val"):
        if not chosen[split]:
            raise UsageError(f"the {split} split of '{root}' has no readable images; add images to it")
    splits = {}
    for split in SPLITS:
        idx = chosen[split]
        splits[split] = Split(
            paths=[flat[i][2] for i in idx],
            labels=np.asarray([flat[i][1] for i in idx], np.int64),
            images=(np.stack([images[i] for i in idx]) if idx
                    else np.zeros((0, pp.height, pp.width, 3), np.uint8)),
        )
    return Data(root=root, classes=classes, layout=layout, splits=splits, skipped=skipped)


# ---------------------------------------------------------------- TensorFlow side

def make_tf_dataset(images: np.ndarray, labels: np.ndarray, batch_size: int, *, augment: bool, seed: int,
                    shard: tuple[int, int] = (0, 1)):
    """uint8 arrays -> shuffled, batched float32 tf.data of raw 0..255 pixels, for training.

    Training batches are all full (the shuffled remainder is dropped, a different one each epoch).
    Augmentation (random horizontal flip, brightness +-10 %, contrast 0.9-1.1) is seeded and
    deterministic per epoch; it lives here, never in the saved model.

    `batch_size` is the global batch. With `shard=(k, n)` (worker k of n) every worker builds the same
    shuffled stream, each element already paired with its own augmentation seed, keeps the k-th of the
    n equal slices of every global batch and augments only those: the n workers together see exactly
    the batches, and the augmentations, that one worker would. tf.distribute's auto-sharding is off
    (set explicitly) because this is the sharding.
    """
    import tensorflow as tf

    index, count = shard
    batch = min(batch_size, len(images))
    local = batch // count
    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    if augment:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds))
    if count > 1:
        full = len(images) // batch * batch  # whole global batches only, so every worker gets as many
        ds = ds.take(full).enumerate().filter(lambda i, _: (i // local) % count == index).map(lambda i, e: e)
    if not augment:
        ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y))
    else:
        def jitter(pair, s):
            x, y = pair
            x = tf.cast(x, tf.float32)
            s = tf.cast(s % (2**31), tf.int32)
            x = tf.image.stateless_random_flip_left_right(x, seed=s)
            x = tf.image.stateless_random_contrast(x, 0.9, 1.1, seed=s[::-1])
            delta = tf.random.stateless_uniform([], seed=s + 1, minval=-25.5, maxval=25.5)
            return tf.clip_by_value(x + delta, 0.0, 255.0), y

        ds = ds.map(jitter, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    # Full batches only: one input shape means one trace of the train step (a second costs seconds).
    return ds.batch(local, drop_remainder=True).prefetch(2).with_options(options)


def load_image_tf(path: str | Path, height: int, width: int, interpolation: str = "bilinear",
                  channels: int = 3) -> np.ndarray:
    """The TensorFlow decode/resize path (as keras' image_dataset_from_directory does it).

    float32 HxWx3 RGB in 0..255 (HxWx4 RGBA with `channels=4`, alpha 255 where the file has none). Parity
    compares it with the OpenCV path to measure preprocessing drift (no EXIF handling, different resize
    kernels, 16-bit scaling).
    """
    from edgeproof.contract import INTERPOLATIONS
    from edgeproof.train.tf_quiet import import_tensorflow

    tf = import_tensorflow("the TensorFlow decode path")

    if interpolation not in INTERPOLATIONS:
        raise UsageError(f"interpolation '{interpolation}' is not valid; valid: {', '.join(INTERPOLATIONS)}")
    try:
        raw = tf.io.read_file(str(path))
        img = tf.io.decode_image(raw, channels=4 if channels == 4 else 3,
                                 expand_animations=False)  # uint8 (16-bit scaled down)
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as exc:
        raise UsageError(f"TensorFlow cannot decode '{path}': {exc.message.splitlines()[0]}") from None
    img = tf.image.resize(img, (height, width), method=interpolation)
    return img.numpy().astype(np.float32)
