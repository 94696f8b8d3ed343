"""Messages that named the wrong cause now name the real one, in one line (issue 17, section 5): a Flex model,
a 2-input or 0-output model, a 1-channel float32 TIFF."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from edgeproof.cli.main import run_cli

cv2 = pytest.importorskip("cv2")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from _errors import one_error_line
from _runtime_models import color_onnx, solid


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "red.png"
    cv2.imwrite(str(path), solid("red"))
    return str(path)


def _onnx(path, inputs, outputs):
    from onnx import TensorProto, helper

    img = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 8, 8, 3])
    extra = helper.make_tensor_value_info("extra", TensorProto.FLOAT, ["N", 3])
    nodes = [helper.make_node("ReduceMean", ["image"], ["m"], axes=[1, 2], keepdims=0),
             helper.make_node("Add", ["m", "extra" if inputs == 2 else "m"], ["probs"])]
    graph = helper.make_graph(nodes, "g", [img, extra][:inputs],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 3])][:outputs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)


@pytest.mark.parametrize("inputs, outputs, why", [
    (2, 1, "'m.onnx' has 2 inputs (image, extra); edgeproof runs image classifiers with one image input"),
    (1, 0, "'m.onnx' has no outputs; an image classifier has one output of class scores"),
])
def test_input_and_output_counts_are_named(tmp_path, image, capsys, inputs, outputs, why):
    path = _onnx(tmp_path / "m.onnx", inputs, outputs)
    assert run_cli(["run", path, image, "--size", "8x8"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line == f"edgeproof: error: {why}"


def test_a_one_channel_float_tiff_is_named_and_opencv_stays_quiet(tmp_path):
    model = color_onnx(tmp_path / "m.onnx")
    tiff = tmp_path / "gray32.tiff"
    assert cv2.imwrite(str(tiff), np.random.default_rng(0).random((20, 20)).astype(np.float32))
    r = subprocess.run([sys.executable, "-m", "edgeproof", "run", str(model), str(tiff)], capture_output=True,
                       text=True, check=False)
    assert r.returncode == 2
    assert "unsupported image format (1-channel floating-point TIFF)" in r.stderr
    assert "grfmt_tiff" not in r.stderr and "corrupt image" not in r.stderr


@pytest.mark.slow
def test_a_flex_model_is_named_as_one(tmp_path, image, capsys):
    pytest.importorskip("tensorflow", reason="making a Flex .tflite needs edgeproof[train]")
    from edgeproof.train.tf_quiet import import_tensorflow

    tf = import_tensorflow("this test")

    @tf.function(input_signature=[tf.TensorSpec([1, 8, 8, 3], tf.float32)], autograph=False)
    def fn(x):
        det = tf.linalg.det(tf.reshape(x[:, :3, :3, 0], [1, 3, 3]))  # MatrixDeterminant: a Flex op
        return tf.nn.softmax(tf.reduce_mean(x, axis=[1, 2]) + det[:, None])

    conv = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    path = tmp_path / "flex.tflite"
    path.write_bytes(conv.convert())
    assert run_cli(["run", str(path), image]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "uses TensorFlow (Flex, SELECT_TF_OPS) ops" in line and "may be truncated" not in line
