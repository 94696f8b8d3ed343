"""`edgeproof convert` argument handling and calibration sampling (fast: no conversion runs)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from _convert_helpers import write_images

from edgeproof.cli.main import run_cli
from edgeproof.contract import Preprocess
from edgeproof.convert.reasons import failure_reason
from edgeproof.errors import UsageError


def _run_without_model(root: Path, n_per_class: int = 6, bad: int = 0) -> Path:
    """A run folder whose train split may hold `bad` unreadable files (model.keras is a dummy)."""
    root.mkdir(parents=True)
    items = write_images(root / "data", n_per_class, ["a", "b", "c"], 16)
    for i in range(bad):
        p = root / "data" / f"broken{i}.png"
        p.write_bytes(b"" if i % 2 else b"not an image at all")
        items.insert(i * 2, [str(p), i % 3])
    (root / "model.keras").write_bytes(b"placeholder")
    (root / "labels.txt").write_text("a\nb\nc\n")
    (root / "preprocess.json").write_text(json.dumps(Preprocess(16, 16).to_dict()))
    (root / "split.json").write_text(json.dumps({"splits": {"train": items}}))
    return root


def test_unknown_format_exits_2_and_lists_valid(tmp_path, capsys):
    run = _run_without_model(tmp_path / "r")
    assert run_cli(["convert", str(run), "--to", "tflite-int4", "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "unknown format 'tflite-int4'" in err and "tflite-int8" in err and "onnx-int8" in err
    assert not (tmp_path / "o").exists()


def test_missing_or_conflicting_format_options_exit_2(tmp_path, capsys):
    run = _run_without_model(tmp_path / "r")
    assert run_cli(["convert", str(run), "-o", str(tmp_path / "o")]) == 2
    assert "--to" in capsys.readouterr().err
    assert run_cli(["convert", str(run), "--to", "all", "--device", "coral"]) == 2


def test_device_profile_selects_its_formats():
    from edgeproof.cli.convert import device_formats

    assert device_formats("coral") == ["edgetpu"]
    with pytest.raises(UsageError, match="unknown device"):
        device_formats("toaster")


def test_not_a_run_folder_exits_2(tmp_path, capsys):
    assert run_cli(["convert", str(tmp_path / "nope"), "--to", "all"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_calibration_skips_and_counts_unreadable_images(tmp_path):
    from edgeproof.convert.calibration import calibration_batch

    run = _run_without_model(tmp_path / "r", n_per_class=6, bad=3)
    batch, sha, skipped = calibration_batch(run, 12)
    assert batch.shape == (12, 16, 16, 3) and batch.dtype == np.float32
    assert len(skipped) == 3 and {Path(p).name for p, _ in skipped} == {"broken0.png", "broken1.png", "broken2.png"}
    assert any("zero-byte" in why for _, why in skipped)
    again, sha2, _ = calibration_batch(run, 12)
    assert sha == sha2 and np.array_equal(batch, again)  # deterministic for a seed
    assert calibration_batch(run, 12, seed=1)[1] != sha


def test_calibration_is_stratified_by_class():
    from edgeproof.convert.calibration import stratified_order

    items = [(f"a{i}", 0) for i in range(50)] + [(f"b{i}", 1) for i in range(5)] + [(f"c{i}", 2) for i in range(50)]
    first = Counter(c for _, c in stratified_order(items)[:15])
    assert first == {0: 5, 1: 5, 2: 5}


def test_too_few_usable_calibration_images_is_an_error(tmp_path, capsys):
    from edgeproof.convert.calibration import calibration_batch

    run = _run_without_model(tmp_path / "r", n_per_class=1, bad=4)
    with pytest.raises(UsageError, match=r"only 3 usable calibration image\(s\).*4 unreadable skipped"):
        calibration_batch(run, 200)
    code = run_cli(["convert", str(run), "--to", "tflite-int8", "-o", str(tmp_path / "o"), "--no-progress"])
    assert code == 2 and "usable calibration" in capsys.readouterr().err


def test_calibration_count_must_be_positive(tmp_path):
    from edgeproof.convert.calibration import calibration_batch

    with pytest.raises(UsageError, match="positive"):
        calibration_batch(_run_without_model(tmp_path / "r"), 0)


def test_failure_reason_names_layer_and_op():
    msg = ('Could not translate MLIR to FlatBuffer.<unknown>:0: error: loc(callsite(fused["Erfinv:", '
           '"functional_1/odd_layer_1/Erfinv@__inference_function_9"] at fused["StatefulPartitionedCall:", '
           '"StatefulPartitionedCall_1"])): \'tf.Erfinv\' op is neither a custom op nor a flex op\nmore')
    reason = failure_reason("tflite-int8", RuntimeError(msg))
    assert reason.startswith("tflite-int8: RuntimeError (layer 'odd_layer', op 'tf.Erfinv')")
    assert "neither a custom op nor a flex op" in reason
    assert failure_reason("onnx-fp32", UsageError("x")) == "onnx-fp32: x"


def test_unwritable_output_exits_2_before_converting(tmp_path, capsys):
    run = _run_without_model(tmp_path / "r")
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert run_cli(["convert", str(run), "--to", "tflite-fp32", "-o", str(blocker / "out")]) == 2
    err = capsys.readouterr().err
    assert "cannot write artifacts to" in err and "internal error" not in err
    assert blocker.read_text() == "x"


def test_wrong_suffix_source_says_what_to_give(tmp_path, capsys):
    model = tmp_path / "model.h5"
    model.write_bytes(b"x")
    assert run_cli(["convert", str(model), "--to", "all", "-o", str(tmp_path / "o")]) == 2
    assert "is not an HDF5 file" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_corrupt_keras_model_is_named_as_corrupt(tmp_path, capsys):
    run = _run_without_model(tmp_path / "r")  # model.keras holds b"placeholder"
    assert run_cli(["convert", str(run), "--to", "tflite-fp32", "-o", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "is not a valid .keras file (truncated or corrupt" in err and "File not found" not in err
    assert not list((tmp_path / "o").glob("model.*"))


def test_missing_tensorflow_gives_install_hint_and_writes_nothing(tmp_path, capsys, monkeypatch):
    import sys

    run = _run_without_model(tmp_path / "r")
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # makes `import tensorflow` raise ImportError
    assert run_cli(["convert", str(run), "--to", "tflite-fp32", "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "edgeproof convert needs the 'tensorflow' package" in err and "pip install 'edgeproof[train]'" in err
    assert not (tmp_path / "o").exists()
