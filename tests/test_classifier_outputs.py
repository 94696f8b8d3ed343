"""Outputs and labels that do not fit a classifier are refused or warned about, never shown as scores
(issue 17, item 6; the [N, 1] sigmoid head is the bring-your-own-model issue's)."""

from __future__ import annotations

import logging

import pytest

from edgeproof.errors import UsageError
from edgeproof.runtime import load

onnx = pytest.importorskip("onnx")
cv2 = pytest.importorskip("cv2")
pytest.importorskip("onnxruntime")

from _runtime_models import LABELS, solid


def _model(path, tail: list, outputs: list, labels=LABELS, output=None, kind="probabilities"):
    """image [N,8,8,3] -> ReduceMean 'm' [N,3] -> `tail` nodes -> `outputs` (name, elem type, shape)."""
    from onnx import TensorProto, helper

    from edgeproof.contract import ArtifactMeta, Preprocess, TensorSpec
    from edgeproof.runtime.metadata import set_onnx_metadata

    nodes = [helper.make_node("ReduceMean", ["image"], ["m"], axes=[1, 2], keepdims=0), *tail]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 8, 8, 3])],
        [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs],
        initializer=[helper.make_tensor("k", TensorProto.FLOAT, [], [0.1]),
                     helper.make_tensor("big", TensorProto.FLOAT, [], [0.5])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if labels is not None:
        set_onnx_metadata(model, ArtifactMeta(labels=list(labels), preprocess=Preprocess(8, 8), format="onnx-fp32",
                                              input=TensorSpec("image", [None, 8, 8, 3], "float32"),
                                              output=TensorSpec(output or outputs[0][0], [None, 3], "float32"),
                                              output_kind=kind))
    onnx.save(model, str(path))
    return path


F, I64 = onnx.TensorProto.FLOAT, onnx.TensorProto.INT64
SOFTMAX = [onnx.helper.make_node("Mul", ["m", "k"], ["z"]), onnx.helper.make_node("Softmax", ["z"], ["probs"], axis=1)]


def _red():
    """A solid red image as the models take it (float32 [1, 8, 8, 3])."""
    from edgeproof.contract import Preprocess
    from edgeproof.runtime.preprocess import prepare

    return prepare(solid("red"), Preprocess(8, 8))[None]


def test_an_int64_argmax_output_is_refused(tmp_path):
    path = _model(tmp_path / "argmax.onnx", [onnx.helper.make_node("ArgMax", ["m"], ["idx"], axis=1, keepdims=0)],
                  [("idx", I64, ["N"])])
    with pytest.raises(UsageError, match=r"output 'idx' is int64 .*class indices \(an ArgMax\?\)"):
        load(path)


def test_a_feature_map_output_is_refused(tmp_path):
    path = _model(tmp_path / "fmap.onnx", [onnx.helper.make_node("Identity", ["image"], ["fmap"])],
                  [("fmap", F, ["N", 8, 8, 3])])
    with pytest.raises(UsageError, match=r"output 'fmap' has shape \[None, 8, 8, 3\]: a feature map"):
        load(path)


def test_the_output_the_metadata_names_is_used_with_two_outputs(tmp_path, caplog):
    import numpy as np

    wrong = [onnx.helper.make_node("Neg", ["probs"], ["negp"]), onnx.helper.make_node("Softmax", ["negp"], ["first"],
                                                                                      axis=1)]
    outputs = [("first", F, ["N", 3]), ("probs", F, ["N", 3])]
    path = _model(tmp_path / "two.onnx", SOFTMAX + wrong, outputs, output="probs")
    x = _red()
    with load(path) as m:
        assert m.output_spec.name == "probs" and m.labels[int(np.argmax(m.predict(x)))] == "red"
    with caplog.at_level(logging.WARNING):  # no metadata: the first output, said loudly
        with load(_model(tmp_path / "bare.onnx", SOFTMAX + wrong, outputs, labels=None)) as m:
            assert m.output_spec.name == "first"
    assert "has 2 outputs (first, probs); using the first, 'first'" in caplog.text


def test_probabilities_that_are_logits_are_warned_about_and_softmaxed(tmp_path, caplog):
    path = _model(tmp_path / "logits.onnx", [onnx.helper.make_node("Div", ["m", "big"], ["scores"])],
                  [("scores", F, ["N", 3])])  # 2 x mean pixel: up to 510, declared 'probabilities'
    with caplog.at_level(logging.WARNING), load(path) as m:
        p = m.predict(_red())
    assert float(p.max()) <= 1.0 and abs(float(p.sum()) - 1) < 1e-5 and m.labels[int(p.argmax())] == "red"
    assert "metadata says its output is probabilities, but it holds values in [0, 510]" in caplog.text


@pytest.mark.parametrize("labels", [["only"], [f"c{i}" for i in range(10)]])
def test_embedded_labels_that_do_not_fit_the_classes_are_refused(tmp_path, labels):
    path = _model(tmp_path / "n.onnx", SOFTMAX, [("probs", F, ["N", 3])], labels=labels)
    with pytest.raises(UsageError, match=rf"embeds {len(labels)} label\(s\) but outputs 3 classes"):
        load(path)
