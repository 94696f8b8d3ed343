"""Helpers for the convert/inspect tests: a hand-made run folder around any Keras model.

The shared `tiny_run` fixture (conftest) is the real trained run; these build extra, smaller cases
(a >=100k-parameter model for the size check, runs with broken calibration images).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgeproof.contract import Preprocess


def write_images(folder: Path, n_per_class: int, classes: list[str], size: int, seed: int = 0) -> list[list]:
    """Random-but-structured PNGs per class; returns [[path, class_index], ...]."""
    import cv2

    rng = np.random.default_rng(seed)
    items = []
    for ci, name in enumerate(classes):
        d = folder / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            img = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
            img[..., ci % 3] += np.uint8(120 + 10 * (i % 5))
            p = d / f"{i:03d}.png"
            cv2.imwrite(str(p), img)
            items.append([str(p), ci])
    return items


def fake_run(root: Path, model, classes: list[str], size: int, n_per_class: int = 8) -> Path:
    """A run folder in the train/run_dir.py schema: model.keras, labels, preprocess, split."""
    root.mkdir(parents=True, exist_ok=True)
    items = write_images(root / "data", n_per_class, classes, size)
    model.save(root / "model.keras")
    (root / "labels.txt").write_text("\n".join(classes) + "\n")
    (root / "preprocess.json").write_text(json.dumps(Preprocess(size, size).to_dict()))
    split = {"data_root": str(root / "data"), "classes": classes, "seed": 0,
             "splits": {"train": items, "val": items[:3], "test": items[:3]}}
    (root / "split.json").write_text(json.dumps(split))
    return root


def small_cnn(size: int, classes: int, width: int = 8, dense: int = 0):
    """Rescaling inside the graph, raw [0, 255] RGB in, softmax out (the train contract)."""
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((size, size, 3), name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inp)
    x = keras.layers.Conv2D(width, 3, padding="same", activation="relu", name="conv1")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(width * 2, 3, padding="same", activation="relu", name="conv2")(x)
    if dense:
        x = keras.layers.Flatten()(x)
        x = keras.layers.Dense(dense, activation="relu", name="fc")(x)
    else:
        x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(classes, activation="softmax", name="head")(x)
    return keras.Model(inp, out)
