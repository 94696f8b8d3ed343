"""Bad input that ended in 'internal error', was silently ignored or failed only after the work (issue 17,
section 5): one line, exit 2, naming the cause."""

from __future__ import annotations

import json
import sys

import pytest

from edgeproof.cli.main import run_cli

cv2 = pytest.importorskip("cv2")
pytest.importorskip("onnxruntime")

from _errors import one_error_line
from _runtime_models import color_onnx, solid


def one_error_line_m(err: str) -> str:
    return one_error_line(err, ignore_prefix="model:")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad2")
    model = color_onnx(root / "model.onnx-fp32.onnx")
    image = root / "red.png"
    cv2.imwrite(str(image), solid("red"))
    return {"root": root, "model": str(model), "image": str(image)}


@pytest.mark.parametrize("argv", [["RUN", ""], ["RUN", "--source", ""], ["RUN", "  "]])
def test_an_empty_source_is_an_error_not_the_working_directory(env, capsys, tmp_path, monkeypatch, argv):
    monkeypatch.chdir(tmp_path)  # a folder with an image: "" used to classify it, recursively
    cv2.imwrite(str(tmp_path / "here.png"), solid("green"))
    assert run_cli(["run", env["model"], *argv[1:]]) == 2
    out, err = capsys.readouterr()
    assert "the source is an empty string" in one_error_line_m(err) and "here.png" not in out


def test_threads_are_bounded_with_the_limit_and_the_core_count(env, capsys):
    import os

    from edgeproof.runtime.spec import MAX_THREADS

    assert run_cli(["run", env["model"], env["image"], "--threads", "10000"]) == 2
    line = one_error_line_m(capsys.readouterr().err)
    assert f"at most {MAX_THREADS} (this machine has {os.cpu_count()} core(s)" in line and "got 10000" in line


def test_an_accelerator_flag_of_the_wrong_kind_is_an_error(env, tmp_path, capsys):
    tflite = tmp_path / "m.tflite"
    tflite.write_bytes(b"never opened: the flags are checked first")
    assert run_cli(["run", str(tflite), env["image"], "--provider", "CUDAExecutionProvider"]) == 2
    assert "runs on backend 'litert'" in one_error_line_m(capsys.readouterr().err)
    assert run_cli(["run", env["model"], env["image"], "--delegate", "libedgetpu.so.1"]) == 2
    assert "runs on backend 'onnxruntime'" in one_error_line_m(capsys.readouterr().err)


def test_train_refuses_a_negative_seed():
    from edgeproof.errors import UsageError
    from edgeproof.train.trainer import TrainConfig

    for seed in (-1, 2**32):
        with pytest.raises(UsageError, match=rf"--seed {seed}: use 0\.\.4294967295"):
            TrainConfig(data_dir=".", out_dir="x", seed=seed).validate()
    TrainConfig(data_dir=".", out_dir="x", seed=2**32 - 1).validate()


@pytest.mark.parametrize("name", ["bad\nname", "tab\there", "esc\x1b[2J"])
def test_train_refuses_a_class_folder_with_a_control_character(tmp_path, name):
    from edgeproof.errors import UsageError
    from edgeproof.train.data import scan

    for cls in ("circle", "square", name):
        (tmp_path / cls).mkdir()
        cv2.imwrite(str(tmp_path / cls / "a.png"), solid("red"))
    with pytest.raises(UsageError, match="has a control character") as err:
        scan(tmp_path)
    assert "\n" not in str(err.value) and "\x1b" not in str(err.value)


def _bench(env, *extra):
    return ["bench", env["model"], "--runs", "2", "--warmup", "0", "--seconds", "0", "--no-isolate",
            "--no-baseline", "--no-plot", *extra]


@pytest.mark.parametrize("where, why", [("file", "is a file"), ("below-file", "cannot be created: '"),
                                        ("sys", "cannot write there (Operation not permitted)")])
def test_bench_checks_its_output_folder_before_measuring(env, tmp_path, capsys, monkeypatch, where, why):
    from edgeproof.bench import runner

    (tmp_path / "f").write_text("a file")
    out = {"file": tmp_path / "f", "below-file": tmp_path / "f" / "sub", "sys": "/sys/edgeproof-bench"}[where]
    monkeypatch.setattr(runner, "run_specs", lambda *a, **k: pytest.fail("measured before checking -o"))
    assert run_cli(_bench(env, "-o", str(out))) == 2
    assert why in one_error_line_m(capsys.readouterr().err)


def test_parity_checks_its_output_folder_before_the_work(env, tmp_path, capsys):
    run = tmp_path / "run"
    (run / "artifacts").mkdir(parents=True)
    (run / "model.keras").write_bytes(b"PK\x03\x04 never opened")
    (run / "labels.txt").write_text("red\ngreen\nblue\n")
    (run / "preprocess.json").write_text(json.dumps({"height": 8, "width": 8}))
    (run / "split.json").write_text(json.dumps({"classes": ["red", "green", "blue"],
                                                "splits": {"test": [[env["image"], 0]]}}))
    color_onnx(run / "artifacts" / "model.onnx-fp32.onnx")
    assert run_cli(["parity", str(run), "-o", "/sys/edgeproof-parity"]) == 2
    assert "cannot write there (Operation not permitted)" in one_error_line_m(capsys.readouterr().err)
    (tmp_path / "f").write_text("a file")
    assert run_cli(["parity", str(run), "-o", str(tmp_path / "f")]) == 2
    assert "is a file" in one_error_line_m(capsys.readouterr().err)


def test_a_requested_keras_baseline_that_cannot_run_is_a_non_zero_exit(env, tmp_path, capsys, monkeypatch):
    keras_file = tmp_path / "model.keras"
    keras_file.write_bytes(b"PK\x03\x04 TensorFlow is missing: never opened")
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # as without edgeproof[train]
    rc = run_cli(_bench(env, "--keras", str(keras_file), "--json"))
    err = capsys.readouterr().err
    assert rc == 2 and "the requested Keras baseline (--keras) did not run" in err and "pip install" in err
