"""Helpers for the parity tests: a run folder around a hand-made Keras model (TensorFlow lazily)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

IMG = 32


def split_items(data_dir: Path) -> tuple[list[str], dict[str, list[tuple[str, int]]]]:
    """Classes and (path, class index) per split of an image folder with train/val/test subfolders."""
    classes = sorted(p.name for p in (data_dir / "train").iterdir() if p.is_dir())
    splits = {}
    for split in ("train", "val", "test"):
        items = []
        for i, c in enumerate(classes):
            items += [(str(p), i) for p in sorted((data_dir / split / c).iterdir()) if p.is_file()]
        splits[split] = items
    return classes, splits


def outlier_run(data_dir: Path, out: Path, scale: float = 3000.0, epochs: int = 25) -> Path:
    """A run whose Dense 'outlier_dense' has two channels ~`scale`× larger than the rest.

    The float model ignores those channels (the head's weights for them are 0), so Keras accuracy is
    unchanged; per-tensor int8 activations give the tensor a scale set by the outliers, the other
    channels round to zero, and full-integer artifacts collapse. Triage must name 'outlier_dense'.
    """
    import keras

    from edgeproof.contract import Preprocess
    from edgeproof.runtime.preprocess import load_batch

    keras.utils.set_random_seed(0)
    classes, splits = split_items(data_dir)
    pp = Preprocess(IMG, IMG)
    x, _, _ = load_batch([p for p, _ in splits["train"]], pp)
    y = np.asarray([c for _, c in splits["train"]])
    inp = keras.Input((IMG, IMG, 3))
    h = keras.layers.Rescaling(1 / 255.0)(inp)
    h = keras.layers.Conv2D(16, 3, strides=2, activation="relu", name="conv")(h)
    h = keras.layers.Conv2D(16, 3, strides=2, activation="relu", name="conv2")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    h = keras.layers.Dense(16, name="outlier_dense")(h)
    h = keras.layers.Dense(len(classes), activation="softmax", name="head")(h)
    model = keras.Model(inp, h)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    k, b = model.get_layer("outlier_dense").get_weights()
    k[:, :2] *= scale
    b[:2] = scale
    model.get_layer("outlier_dense").set_weights([k, b])
    hk, hb = model.get_layer("head").get_weights()
    hk[:2] = 0.0
    model.get_layer("head").set_weights([hk, hb])
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / "model.keras")
    (out / "labels.txt").write_text("\n".join(classes) + "\n")
    (out / "preprocess.json").write_text(json.dumps(pp.to_dict()))
    (out / "split.json").write_text(json.dumps({"data_root": str(data_dir), "classes": classes, "seed": 0,
                                                "splits": splits}))
    return out
