"""kill -9 during `edgeproof train` / `edgeproof convert`: nothing at a final name is incomplete, the
artifact/manifest pair never makes the runtime refuse a good file, `train --resume` finishes with the
uninterrupted run's exact weights, and the next run removes the dead process's temp files.

The kills are real SIGKILLs of a subprocess: either when the file system shows a given point was
reached (polled), or by the process itself in the middle of a write (a hook truncates the temp file
it is writing and kills itself), so every kill point is reproducible.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="needs edgeproof[train]")

from _kill_checks import (  # noqa: E402
    KILLED,
    TINY,
    check_artifacts,
    check_checkpoint,
    check_run_folder,
    finish,
    hidden_are_temps,
    kill_when,
    snapshot,
    spawn,
)

from edgeproof.cli.main import run_cli  # noqa: E402

# ---------------------------------------------------------------- train

# The child writes half of a file and SIGKILLs itself, as a power cut in the middle of the write would.
_DIE_IN_CHECKPOINT = """
    import os, signal, keras
    from pathlib import Path
    _save = keras.Model.save
    def save(self, path, *a, **k):
        if ".epoch-0002." in Path(path).name:  # the second epoch's checkpoint, under its temp name
            _save(self, path, *a, **k)
            data = Path(path).read_bytes()
            Path(path).write_bytes(data[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
        return _save(self, path, *a, **k)
    keras.Model.save = save
"""
_DIE_IN_RUN_FOLDER = """
    import os, signal
    from pathlib import Path
    from edgeproof.train import report
    def plot_confusion(path, *a, **k):  # model.keras and most files are in the temp run folder by now
        Path(path).write_bytes(b"\\x89PNG half")
        os.kill(os.getpid(), signal.SIGKILL)
    report.plot_confusion = plot_confusion
"""


def _epoch(partial: Path) -> int:
    try:
        return json.loads((partial / "state.json").read_text())["epoch"]
    except (OSError, ValueError):
        return 0


@pytest.mark.slow
def test_train_killed_at_four_points_keeps_the_old_run_and_resumes_to_the_uninterrupted_weights(
        tiny_run, shapes_dir, tmp_path, capsys):
    import keras

    out = tmp_path / "run"
    shutil.copytree(tiny_run, out)  # an older complete run at the destination must survive every kill
    old = snapshot(out)
    partial = tmp_path / ".run.partial"
    args = ["train", "--data", str(shapes_dir), *TINY, "-o", str(out)]

    # 1. Very early: the child holds its checkpoint lock; TensorFlow is not even imported yet.
    kill_when(spawn(args, tmp_path), lambda: (partial / "lock").exists())
    check_run_folder(out, old)
    assert not (partial / "state.json").exists()
    assert run_cli([*args, "--resume"]) == 2
    assert "no checkpoint to resume" in capsys.readouterr().err

    # 2. Mid-write: killed while writing epoch 2's checkpoint. The committed state is epoch 1, complete.
    rc, log = finish(spawn(args, tmp_path, _DIE_IN_CHECKPOINT))
    assert rc == KILLED, log[-3000:]
    assert check_checkpoint(partial)["epoch"] == 1
    assert hidden_are_temps(partial)  # the half-written .keras, under a temp name only
    check_run_folder(out, old)

    # Other options than the checkpoint's: one line saying what differs, exit 2, the committed
    # checkpoint untouched (the dead writer's temp file is removed).
    before = snapshot(partial)
    assert run_cli([*args[:-2], "--lr", "0.01", "-o", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "--lr 0.01 (checkpoint: 0.003)" in err and len(err.strip().splitlines()) == 1
    assert snapshot(partial) == {k: v for k, v in before.items() if not k.startswith(".")}

    # 3. The resumed child is killed once it committed a later epoch (polled).
    kill_when(spawn([*args, "--resume"], tmp_path), lambda: _epoch(partial) >= 3)
    assert check_checkpoint(partial)["epoch"] >= 3
    check_run_folder(out, old)

    # 4. Resumed again and killed while writing the run folder: the old run is still intact.
    rc, log = finish(spawn([*args, "--resume"], tmp_path, _DIE_IN_RUN_FOLDER))
    assert rc == KILLED, log[-3000:]
    assert check_checkpoint(partial)["epoch"] == 4
    assert hidden_are_temps(tmp_path)  # the half-written run folder, under a temp name only
    check_run_folder(out, old)

    # 5. --resume finishes: every epoch in the history, the same layout, exactly the uninterrupted
    # run's weights and history (tiny_run: same data and options), no temp folder, no checkpoint.
    assert run_cli([*args, "--resume"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["resumed_after_epoch"] == 4 and m["epochs_run"] == 4
    assert len(list(csv.DictReader((out / "history.csv").open()))) == 4
    assert (out / "history.csv").read_text() == (tiny_run / "history.csv").read_text()
    assert [p.name for p in sorted(out.iterdir())] == [p.name for p in sorted(tiny_run.iterdir())]
    ref = keras.saving.load_model(tiny_run / "model.keras").get_weights()
    got = keras.saving.load_model(out / "model.keras").get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(ref, got, strict=True))
    assert snapshot(out) != old
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".log")) == ["run"]


def test_resume_checks_data_and_config():
    from types import SimpleNamespace

    from edgeproof.train.checkpoint import config_differences, data_differences, data_fingerprint

    def data(pixels: int, n: int = 4):
        split = SimpleNamespace(labels=np.zeros(n, np.int64), images=np.full((n, 2, 2, 3), pixels, np.uint8))
        return SimpleNamespace(classes=["a", "b"], splits={"train": split})

    base = data_fingerprint(data(1))
    assert data_differences(base, data_fingerprint(data(1))) is None
    assert "different pixels" in data_differences(base, data_fingerprint(data(2)))
    assert data_differences(base, data_fingerprint(data(1, n=5))) == "train: 5 images (checkpoint: 4)"
    assert config_differences({"epochs": 4, "lr": 0.003}, {"epochs": 4, "lr": 0.003}) == []
    assert config_differences({"epochs": 4, "seed": 0}, {"epochs": 6, "seed": 0}) == ["--epochs 6 (checkpoint: 4)"]


# ---------------------------------------------------------------- convert


@pytest.mark.slow
def test_convert_killed_early_and_after_an_artifact(tiny_run, tiny_artifacts, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(tiny_artifacts, out)  # an earlier complete conversion of every format
    old = snapshot(out)
    args = ["convert", str(tiny_run), "--to", "tflite-fp32,tflite-fp16", "-o", str(out), "--no-progress"]

    # 1. Very early (before TensorFlow is imported): the earlier conversion is untouched.
    proc = spawn(args, tmp_path)
    time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    assert finish(proc)[0] == KILLED
    assert snapshot(out) == old

    # 2. Killed as soon as the first new artifact is at its final name (polled: a new inode).
    first = out / "model.tflite-fp32.tflite"
    inode = first.stat().st_ino
    kill_when(spawn(args, tmp_path), lambda: first.exists() and first.stat().st_ino != inode)
    check_artifacts(out)

    # 3. A re-run succeeds, removes the dead process's temp files and leaves a consistent folder.
    assert run_cli(args) == 0
    entries = check_artifacts(out)
    assert all(e["status"] == "ok" and e["sha256"] for e in entries.values())
    assert not hidden_are_temps(out)


# The child truncates the temp manifest.json it is writing after renaming the new artifact in, then
# SIGKILLs itself: the old order (artifact renamed in, entry still holding the old sha256) would
# leave a good file that the runtime refuses.
_DIE_IN_MANIFEST = """
    import os, signal
    from pathlib import Path
    import edgeproof.atomic as atomic
    _fsync = atomic.fsync_file
    calls = []
    def fsync_file(path):
        if Path(path).name.startswith(".manifest.json."):
            calls.append(path)
            if len(calls) == 2:  # 1: the entry marked pending; 2: the entry with the new sha256
                data = Path(path).read_bytes()
                Path(path).write_bytes(data[: len(data) // 2])
                os.kill(os.getpid(), signal.SIGKILL)
        return _fsync(path)
    atomic.fsync_file = fsync_file
"""


@pytest.mark.slow
def test_reconvert_killed_between_artifact_and_manifest_never_refuses_a_good_file(tiny_run, tiny_artifacts,
                                                                                  tmp_path):
    from edgeproof.runtime import load
    from edgeproof.runtime.integrity import sha256_file

    out = tmp_path / "out"
    shutil.copytree(tiny_artifacts, out)
    args = ["convert", str(tiny_run), "--to", "tflite-fp32", "-o", str(out), "--no-progress"]
    artifact = out / "model.tflite-fp32.tflite"
    old_sha = sha256_file(artifact)  # the re-converted bytes differ: they embed a later 'created' time

    rc, log = finish(spawn(args, tmp_path, _DIE_IN_MANIFEST))
    assert rc == KILLED, log[-3000:]
    assert sha256_file(artifact) != old_sha  # the new artifact was renamed in ...
    entry = check_artifacts(out)[artifact.name]
    assert entry["status"] == "pending" and entry["sha256"] is None  # ... and its entry vouches for nothing
    with load(artifact):  # so the runtime loads the good new file (it would refuse it against old_sha)
        pass
    assert hidden_are_temps(out)  # the half-written manifest, under a temp name

    assert run_cli(args) == 0
    entry = check_artifacts(out)[artifact.name]
    assert entry["status"] == "ok" and entry["sha256"] == sha256_file(artifact)
    assert not hidden_are_temps(out)


# ---------------------------------------------------------------- the atomic layer's clean-up rules


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2-exchange", "two-renames"])
def test_replace_dir_and_clean_stale(tmp_path, monkeypatch, exchange):
    from edgeproof import atomic

    if not exchange:
        monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    dest = tmp_path / "run"
    dest.mkdir()
    (dest / "x").write_text("old")
    new = atomic.temp_dir_beside(dest)
    (new / "x").write_text("new")
    atomic.replace_dir(new, dest)
    assert (dest / "x").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["run"]

    dead, sleeper = _dead_pid(), subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        names = {
            f".run.{dead}-abcd_123.tmp": "dead writer: removed",
            f".model.keras.{dead}-abcd1234.tmp.keras": "dead writer: removed",
            f".run.{sleeper.pid}-abcd1234.tmp": "live writer: kept",
            f".run.{os.getpid()}-abcd1234.tmp": "this process: kept",
            f".run.{dead}-abcd.tmp": "not our pattern: kept",
            f"run.{dead}-abcd1234.tmp": "not hidden: kept",
            ".run.partial": "checkpoint: kept",
        }
        for name in names:
            (tmp_path / name).write_text("x")
        old_other = tmp_path / f".other.{dead}-abcd1234.old"  # killed mid-swap: 'other' is missing
        old_other.mkdir()
        (old_other / "x").write_text("old complete run")
        assert sorted(atomic.clean_stale(tmp_path, "run")) == [f"removed .run.{dead}-abcd_123.tmp"]
        done = atomic.clean_stale(tmp_path)
        assert sorted(done) == [f"removed .model.keras.{dead}-abcd1234.tmp.keras",
                                f"restored other from .other.{dead}-abcd1234.old"]
        assert (tmp_path / "other" / "x").read_text() == "old complete run"
        kept = {n for n, why in names.items() if why.endswith("kept")}
        assert {p.name for p in tmp_path.iterdir()} == kept | {"run", "other"}
    finally:
        sleeper.kill()
        sleeper.wait()


def test_dataset_build_replaces_a_half_built_folder_and_removes_dead_temps(tmp_path):
    from edgeproof.train.datasets import MARKER, build_dataset

    dead = _dead_pid()
    stale = tmp_path / f".shapes-16px-5pc-seed0.{dead}-abcdefgh.tmp"  # a build killed mid-write
    (stale / "train" / "circle").mkdir(parents=True)
    (stale / "train" / "circle" / "circle_0000.png").write_bytes(b"\x89PNG half")
    half = tmp_path / "shapes-16px-5pc-seed0"  # a folder without its completeness marker
    (half / "train").mkdir(parents=True)
    dest = build_dataset("shapes", root=tmp_path, image_size=16, per_class=5, seed=0)
    assert dest == half and (dest / MARKER).is_file()
    assert len(list(dest.rglob("*.png"))) == 3 * (5 + 2 + 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [dest.name]
