"""`train -o runs/x` over an existing run never drops files train did not write (issue 17, item 9)."""

from __future__ import annotations

import json
import logging

import pytest

from edgeproof.train.run_dir import keep_foreign_entries


def test_keep_foreign_entries_links_everything_train_did_not_write(tmp_path, caplog):
    old, new = tmp_path / "x", tmp_path / ".x.1-abc.tmp"
    (old / "artifacts" / "deep").mkdir(parents=True)
    (old / "artifacts" / "deep" / "model.tflite").write_bytes(b"TFL3")
    (old / "NOTES.txt").write_text("mine")
    (old / "link").symlink_to("NOTES.txt")
    (old / "labels.txt").write_text("old\n")  # train's own file: replaced, not kept
    new.mkdir()
    (new / "labels.txt").write_text("new\n")
    with caplog.at_level(logging.WARNING):
        kept = keep_foreign_entries(old, new)
    assert kept == ["NOTES.txt", "artifacts/", "link"]
    assert (new / "NOTES.txt").read_text() == "mine" and (new / "labels.txt").read_text() == "new\n"
    assert (new / "artifacts" / "deep" / "model.tflite").read_bytes() == b"TFL3"
    assert (new / "link").is_symlink() and (new / "link").read_text() == "mine"
    assert "re-run 'edgeproof convert" in caplog.text and "NOTES.txt" in caplog.text
    assert keep_foreign_entries(tmp_path / "missing", new) == []


@pytest.mark.slow
def test_retrain_over_a_run_keeps_artifacts_and_user_files(shapes_dir, tmp_path):
    pytest.importorskip("tensorflow", reason="needs edgeproof[train]")
    from edgeproof.train.trainer import TrainConfig, train

    out = tmp_path / "x"
    cfg = dict(data_dir=shapes_dir, out_dir=out, model="tiny_cnn", img_size=16, epochs=1, seed=0)
    train(TrainConfig(**cfg), progress=False)
    (out / "artifacts").mkdir()
    (out / "artifacts" / "model.tflite-fp32.tflite").write_bytes(b"converted")
    (out / "NOTES.txt").write_text("do not lose me")
    train(TrainConfig(**{**cfg, "img_size": 24}), progress=False)
    assert json.loads((out / "metrics.json").read_text())["img_size"] == 24  # the new run is in place
    assert (out / "NOTES.txt").read_text() == "do not lose me"
    assert (out / "artifacts" / "model.tflite-fp32.tflite").read_bytes() == b"converted"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]  # no temp or old folder left
