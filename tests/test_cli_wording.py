"""One clear line for bad input, exit 2: what was received, what is valid, what to do (review findings)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from edgeproof.cli.main import run_cli


def _err_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.fixture
def onnx_and_image(tmp_path):
    pytest.importorskip("onnxruntime")
    from _tiny_onnx import build_linear_onnx

    model, _ = build_linear_onnx(tmp_path / "linear.onnx")
    image = tmp_path / "photo.png"
    cv2.imwrite(str(image), np.full((8, 8, 3), 128, np.uint8))
    return model, image


@pytest.mark.parametrize("value", ["", "  "])
def test_empty_labels_are_refused_not_taken_as_none(onnx_and_image, capsys, value):
    model, image = onnx_and_image
    assert run_cli(["run", str(model), str(image), "--labels", value]) == 2
    err = _err_line(capsys)
    assert "--labels" in err and "empty" in err and "one label per line" in err


def test_given_labels_still_name_the_classes(onnx_and_image, capsys):
    model, image = onnx_and_image
    assert run_cli(["run", str(model), str(image), "--labels", "a,b,c", "--json"]) == 0
    row = json.loads(capsys.readouterr().out.splitlines()[0])
    assert sorted(t["label"] for t in row["top_k"]) == ["a", "b", "c"]


def test_export_web_on_a_folder_says_it_is_a_folder(tmp_path, capsys):
    (tmp_path / "artifacts").mkdir()
    assert run_cli(["export", "web", str(tmp_path / "artifacts"), "-o", str(tmp_path / "site")]) == 2
    err = _err_line(capsys)
    assert "is a folder" in err and ".tflite" in err and "(none)" not in err and "suffix" not in err


def test_missing_model_and_missing_image_are_both_named(tmp_path, capsys):
    assert run_cli(["run", str(tmp_path / "gone.tflite"), str(tmp_path / "gone.jpg")]) == 2
    err = _err_line(capsys)
    assert "gone.tflite" in err and "gone.jpg" in err and "not found" in err


def test_missing_model_alone_is_named(tmp_path, onnx_and_image, capsys):
    _, image = onnx_and_image
    assert run_cli(["run", str(tmp_path / "gone.tflite"), str(image)]) == 2
    err = _err_line(capsys)
    assert "gone.tflite" in err and "photo.png" not in err


def test_provider_on_litert_names_the_backends_that_take_it(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    model = tmp_path / "m.tflite"  # the options are checked before the file is read
    model.write_bytes(b"x")
    image = tmp_path / "photo.png"
    cv2.imwrite(str(image), np.zeros((4, 4, 3), np.uint8))
    assert run_cli(["run", str(model), str(image), "--provider", "CUDAExecutionProvider"]) == 2
    err = _err_line(capsys)
    assert "neither" not in err and "CUDAExecutionProvider" in err and "'litert'" in err
    assert "--backend onnxruntime" in err and "leave them out" in err
