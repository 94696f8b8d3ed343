"""Training end to end: the run folder, its numbers, atomicity and seeding."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="needs edgeproof[train]")

RUN_FILES = ("model.keras", "labels.txt", "preprocess.json", "split.json", "metrics.json", "history.csv",
             "training.png", "confusion.png")


def _config(data_dir, out, **kw):
    from edgeproof.train.trainer import TrainConfig

    base = dict(model="tiny_cnn", img_size=32, epochs=4, batch_size=32, lr=3e-3, seed=0)
    return TrainConfig(data_dir=data_dir, out_dir=out, **{**base, **kw})


@pytest.mark.slow
def test_tiny_run_writes_every_file(tiny_run, shapes_dir):
    from edgeproof.contract import Preprocess
    from edgeproof.train.run_dir import load_run

    for name in RUN_FILES:
        assert (tiny_run / name).is_file() and (tiny_run / name).stat().st_size > 0, name
    assert not list(tiny_run.parent.glob(f".{tiny_run.name}.*"))  # no temp folder left behind
    run = load_run(tiny_run)
    assert run.labels == ["circle", "square", "triangle"]
    assert run.preprocess == Preprocess(32, 32, in_graph=run.preprocess.in_graph)
    assert run.preprocess.in_graph == {"rescaling": {"scale": 1 / 255, "offset": 0.0}}
    for split in ("train", "val", "test"):
        paths = run.split(split)
        assert paths and all(Path(p).is_absolute() and Path(p).is_file() for p, _ in paths)
        assert all(f"/{split}/" in p for p, _ in paths)  # the dataset's own split folders were used

    m = json.loads((tiny_run / "metrics.json").read_text())
    assert m["accuracy"]["test"] >= 0.6, m["accuracy"]  # chance is 1/3
    assert m["counts"] == {"train": 180, "val": 39, "test": 39}
    test = m["splits"]["test"]
    assert np.asarray(test["confusion_matrix"]).sum() == 39
    assert set(test["per_class"]) == set(run.labels)
    assert all({"precision", "recall", "f1", "support"} <= set(v) for v in test["per_class"].values())
    assert m["skipped"] == {"total": 0, "by_reason": {}, "files": []}
    assert {"load", "train", "evaluate", "total"} <= set(m["seconds"])
    rows = list(csv.DictReader((tiny_run / "history.csv").open()))
    assert len(rows) == m["epochs_run"] and {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(rows[0])
    assert (tiny_run / "training.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_saved_model_reproduces_reported_accuracy(tiny_run):
    """model.keras holds the restored best weights and recalibrated BatchNorm statistics."""
    import keras

    from edgeproof.runtime.preprocess import load_image
    from edgeproof.train.run_dir import load_run

    run = load_run(tiny_run)
    model = keras.models.load_model(run.model_path)
    items = run.split("test")
    x = np.stack([load_image(p, run.preprocess) for p, _ in items])
    acc = float((model.predict(x, verbose=0).argmax(1) == np.array([i for _, i in items])).mean())
    m = json.loads((tiny_run / "metrics.json").read_text())
    assert acc == pytest.approx(m["accuracy"]["test"], abs=1e-3)
    assert not [layer for layer in model.layers if "random" in type(layer).__name__.lower()]


@pytest.mark.slow
def test_same_seed_same_result_and_failure_keeps_old_run(shapes_dir, tmp_path, monkeypatch):
    from edgeproof.train import report
    from edgeproof.train.trainer import train

    a = train(_config(shapes_dir, tmp_path / "a", epochs=2), progress=False)
    b = train(_config(shapes_dir, tmp_path / "b", epochs=2), progress=False)
    ma, mb = (json.loads((p / "metrics.json").read_text()) for p in (a, b))
    assert abs(ma["accuracy"]["val"] - mb["accuracy"]["val"]) <= 0.01
    assert (a / "split.json").read_text() == (b / "split.json").read_text()

    # A run that fails while writing leaves the previous complete run untouched and no temp folder;
    # only its checkpoint (for --resume) remains.
    before = {f: (a / f).read_bytes() for f in RUN_FILES}

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(report, "plot_confusion", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        train(_config(shapes_dir, a, epochs=1), progress=False)
    assert {f: (a / f).read_bytes() for f in RUN_FILES} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".a.partial", "a", "b"]

    # ... and a successful re-run replaces it (and removes the checkpoint).
    monkeypatch.undo()
    train(_config(shapes_dir, a, epochs=1, img_size=16), progress=False)
    assert json.loads((a / "metrics.json").read_text())["img_size"] == 16
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


@pytest.mark.slow
def test_cli_train_json(shapes_dir, tmp_path, capsys):
    from edgeproof.cli.main import run_cli

    out = tmp_path / "cli"
    rc = run_cli(["train", "--data", str(shapes_dir), "--img-size", "24", "--epochs", "1", "--model",
                  "mobilenet_v2_tiny", "--alpha", "0.35", "-o", str(out), "--json", "--no-progress"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["run"] == str(out.resolve()) and summary["img_size"] == 24
    assert summary["model"] == "mobilenet_v2_tiny" and summary["alpha"] == 0.35
    assert set(summary["accuracy"]) == {"train", "val", "test"}
    assert all((out / f).is_file() for f in RUN_FILES)


@pytest.mark.slow
def test_textures_are_learnable_but_not_trivial(tmp_path):
    """The twelve-class real-photo dataset is learnable, and hard enough that a short 32 px run is not perfect
    (measured 86.5 %): parity's flips section has something to show."""
    pytest.importorskip("skimage")
    from edgeproof.train.datasets import build_dataset
    from edgeproof.train.trainer import train

    data = build_dataset("textures", root=tmp_path / "data", image_size=32, per_class=60, seed=0)
    run = train(_config(data, tmp_path / "run", epochs=10, lr=1e-3), progress=False)
    m = json.loads((run / "metrics.json").read_text())
    assert 0.75 <= m["accuracy"]["test"] < 1.0, m["accuracy"]
    assert m["layout"] == "folders" and len(m["classes"]) == 12


def test_memory_guard(tmp_path, monkeypatch):
    from edgeproof.contract import Preprocess
    from edgeproof.errors import UsageError
    from edgeproof.train.data import load_data

    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        (tmp_path / c / "x.png").write_bytes(b"\x89PNG")
    monkeypatch.setenv("EDGEPROOF_MAX_DATA_GB", "0.000001")
    with pytest.raises(UsageError, match="GiB in memory"):
        load_data(tmp_path, Preprocess(64, 64))
