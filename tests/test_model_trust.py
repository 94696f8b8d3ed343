"""A model is a program (issue 24, item 1): file, Python and network ops are refused before any call unless
--trust-model, in every format edgeproof loads.

The SavedModel's serving signature writes a file with tf.io.write_file: the test asserts the file is not
written by `convert` (and is written once the user passes --trust-model, so the flag is what allows it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _errors import one_error_line

from edgeproof.cli.main import run_cli
from edgeproof.errors import UsageError

CONVERT = ["--labels", "a,b,c", "--scale", "0.0039", "--to", "tflite-fp32"]


def _saved_model(tmp_path: Path, body: str, name: str = "sm") -> Path:
    """A tf.Module whose serving signature (8x8x3 -> 3 classes) runs `body` (x is its input) first."""
    pytest.importorskip("tensorflow", reason="needs edgeproof[train]")
    import tensorflow as tf

    class M(tf.Module):
        def __init__(self):
            self.w = tf.Variable(np.eye(3, dtype=np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 3], tf.float32)])
        def serve(self, x):
            exec(body, {"tf": tf, "x": x, "target": str(tmp_path / "pwned.txt")})  # traced into the graph
            return tf.nn.softmax(tf.reduce_mean(x, [1, 2]) @ self.w)

    m = M()
    out = tmp_path / name
    tf.saved_model.save(m, str(out), signatures={"serving_default": m.serve})
    return out


WRITE_READ = "tf.io.write_file(target, tf.io.read_file('/etc/hostname'))"


def test_convert_refuses_a_saved_model_that_writes_a_file_and_writes_nothing(tmp_path, capsys):
    sm = _saved_model(tmp_path, WRITE_READ)
    assert run_cli(["convert", str(sm), *CONVERT, "-o", str(tmp_path / "out"), "--no-progress"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "holds the op ReadFile" in line or "holds the op WriteFile" in line, line
    assert "--trust-model" in line, line
    assert not (tmp_path / "pwned.txt").exists()
    assert not list((tmp_path / "out").glob("*.tflite")) if (tmp_path / "out").exists() else True


def test_parity_refuses_it_too_before_its_keras_reference_runs(tmp_path, capsys):
    from edgeproof.parity import reference

    sm = _saved_model(tmp_path, WRITE_READ)
    with pytest.raises(UsageError, match="holds the op (ReadFile|WriteFile)"):
        reference.load_keras(sm)
    assert not (tmp_path / "pwned.txt").exists()


@pytest.mark.parametrize("body, op", [
    ("tf.raw_ops.SaveV2(prefix=target, tensor_names=['x'], shape_and_slices=[''], tensors=[x])", "SaveV2"),
    ("tf.print(x, output_stream='file://' + target)", "PrintV2"),
    ("tf.numpy_function(lambda a: a, [x], tf.float32)", "PyFunc"),
    ("tf.io.matching_files('/etc/*')", "MatchingFiles"),
])
def test_each_kind_of_outside_op_is_named(tmp_path, body, op):
    from edgeproof.convert.saved_model_scan import check_saved_model

    sm = _saved_model(tmp_path, body)
    with pytest.raises(UsageError, match=f"holds the op {op} "):
        check_saved_model(sm)
    assert len(check_saved_model(sm, trust_model=True)) > 0


def test_an_ordinary_saved_model_passes_the_scan_with_its_own_saver(tmp_path):
    from edgeproof.convert.saved_model_scan import check_saved_model

    sm = _saved_model(tmp_path, "tf.print(tf.shape(x))")  # tf.print to stderr is harmless
    names = check_saved_model(sm)  # its saver functions hold SaveV2/RestoreV2/MergeV2Checkpoints: allowed there
    assert names


@pytest.mark.slow
def test_trust_model_lets_the_user_go_on(tmp_path, capsys):
    sm = _saved_model(tmp_path, WRITE_READ)
    run_cli(["convert", str(sm), *CONVERT, "-o", str(tmp_path / "out"), "--no-progress", "--trust-model"])
    assert "holds the op" not in capsys.readouterr().err  # (TFLite then cannot hold tf.ReadFile: its own error)
    assert (tmp_path / "pwned.txt").exists()  # the graph ran while convert evaluated it: the flag allowed it


def _lambda_keras(tmp_path: Path) -> Path:
    pytest.importorskip("tensorflow", reason="needs edgeproof[train]")
    import keras

    inp = keras.Input((8, 8, 3))
    x = keras.layers.Lambda(lambda t: t * 2.0)(inp)
    out = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    path = tmp_path / "lam.keras"
    keras.Model(inp, out).save(path)
    return path


def test_a_keras_lambda_is_refused_in_one_whole_line_naming_the_flag(tmp_path, capsys):
    path = _lambda_keras(tmp_path)
    assert run_cli(["convert", str(path), *CONVERT, "-o", str(tmp_path / "out"), "--no-progress"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "Lambda layer" in line and line.rstrip().endswith("to load it anyway"), line
    assert "safe_mode=False" not in line and "If you trust the ;" not in line, line

    from edgeproof.convert.keras_model import load_model

    assert load_model(path, "keras", trust_model=True) is not None


@pytest.mark.slow
def test_a_flex_tflite_that_writes_a_file_is_refused_by_run(tmp_path, capsys):
    pytest.importorskip("tensorflow", reason="needs edgeproof[train]")
    import tensorflow as tf

    target = tmp_path / "pwned.txt"

    @tf.function(input_signature=[tf.TensorSpec([1, 8, 8, 3], tf.float32)])
    def f(x):
        tf.io.write_file(str(target), tf.strings.as_string(tf.reduce_sum(x)))
        return tf.nn.softmax(tf.reduce_mean(x, [1, 2]))

    conv = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    model = tmp_path / "flex.tflite"
    model.write_bytes(conv.convert())
    img = tmp_path / "x.png"
    import cv2

    cv2.imwrite(str(img), np.full((8, 8, 3), 128, np.uint8))
    assert run_cli(["run", str(model), str(img), "--size", "8"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "holds the op FlexWriteFile" in line and "--trust-model" in line, line
    assert not target.exists()


def _custom_domain_onnx(path: Path) -> Path:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["image"], ["mid"]),
         helper.make_node("Steal", ["mid"], ["flat"], domain="evil.ops"),
         helper.make_node("Softmax", ["flat"], ["probs"], axis=1)],
        "g", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 8, 8, 3])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("evil.ops", 1)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_an_onnx_custom_op_domain_is_refused_and_standard_models_are_not(tmp_path):
    from _tiny_onnx import build_linear_onnx

    from edgeproof.runtime.model_ops import check_ops

    bad = _custom_domain_onnx(tmp_path / "custom.onnx")
    with pytest.raises(UsageError, match="custom domain 'evil.ops' \\(Steal\\).*--trust-model"):
        check_ops(bad, "onnx")
    check_ops(bad, "onnx", trust_model=True)
    good, _ = build_linear_onnx(tmp_path / "good.onnx")
    check_ops(good, "onnx")


def test_run_refuses_the_custom_domain_in_one_line(tmp_path, capsys):
    import cv2

    bad = _custom_domain_onnx(tmp_path / "custom.onnx")
    cv2.imwrite(str(tmp_path / "x.png"), np.full((8, 8, 3), 128, np.uint8))
    assert run_cli(["run", str(bad), str(tmp_path / "x.png")]) == 2
    assert "custom domain 'evil.ops'" in one_error_line(capsys.readouterr().err)
