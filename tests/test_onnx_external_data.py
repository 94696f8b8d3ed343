"""ONNX external data outside the model's folder is refused before any library opens it (issue 17, item 8)."""

from __future__ import annotations

import numpy as np
import pytest

from edgeproof.cli.main import run_cli
from edgeproof.runtime.onnx_external import external_locations, outside_folder

onnx = pytest.importorskip("onnx")
cv2 = pytest.importorskip("cv2")
pytest.importorskip("onnxruntime")

from _runtime_models import solid


def _model(path, location: str):
    """The color model, its weight k = 0.1 and a Constant's value kept in the external file `location`; also
    returns a branch graph with one more external initializer, for an If node."""
    from onnx import TensorProto, helper

    def external(name):
        w = helper.make_tensor(name, TensorProto.FLOAT, [], [0.0])
        w.ClearField("float_data")
        w.data_location = TensorProto.EXTERNAL
        for k, v in (("location", location), ("offset", "0"), ("length", "4")):
            entry = w.external_data.add()
            entry.key, entry.value = k, v
        return w

    branch = helper.make_graph([helper.make_node("Identity", ["k2"], ["kk"])], "branch", [],
                               [helper.make_tensor_value_info("kk", TensorProto.FLOAT, [])],
                               initializer=[external("k2")])
    nodes = [helper.make_node("ReduceMean", ["image"], ["m"], axes=[1, 2], keepdims=0),
             helper.make_node("Mul", ["m", "k"], ["z"]),
             helper.make_node("Softmax", ["z"], ["probs"], axis=1),
             helper.make_node("Constant", [], ["c"], value=external("k3"))]
    graph = helper.make_graph(
        nodes, "color", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 8, 8, 3])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 3])], initializer=[external("k")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return model, branch


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "secret.bin").write_bytes(np.float32([0.1]).tobytes())
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "w.bin").write_bytes(np.float32([0.1]).tobytes())
    (folder / "link.bin").symlink_to(tmp_path / "secret.bin")
    image = tmp_path / "red.png"
    cv2.imwrite(str(image), solid("red", 8, 8))
    return folder, str(image)


def test_the_walker_finds_locations_in_initializers_attributes_and_subgraphs(tree):
    from onnx import helper

    folder, _ = tree
    model, branch = _model(folder / "m.onnx", "w.bin")
    assert external_locations(folder / "m.onnx") == ["w.bin", "w.bin"]  # initializer k, Constant k3
    model.graph.node.append(helper.make_node("If", ["c"], ["u"], then_branch=branch, else_branch=branch))
    (folder / "sub.onnx").write_bytes(model.SerializeToString())
    assert external_locations(folder / "sub.onnx") == ["w.bin"] * 4
    (folder / "junk.onnx").write_bytes(b"\x08\x07\x3a\xff\xff")  # a truncated protobuf: no error here
    assert external_locations(folder / "junk.onnx") == []


@pytest.mark.parametrize("location", ["../secret.bin", "{tmp}/secret.bin", "link.bin", "sub/../../secret.bin"])
def test_external_data_outside_the_folder_is_refused_by_inspect_and_run(tree, capsys, location):
    folder, image = tree
    location = location.format(tmp=folder.parent)
    path = folder / "bad.onnx"
    _model(path, location)
    assert outside_folder(path) == location
    for argv in (["inspect", str(path)], ["run", str(path), image, "--size", "8x8"],
                 ["run", str(path), image, "--size", "8x8", "--backend", "opencv"]):
        assert run_cli(argv) == 2
        out, err = capsys.readouterr()
        assert f"names external data '{location}' outside its folder" in err and "runtime opencv" not in out


def test_external_data_beside_the_model_loads(tree, capsys):
    folder, image = tree
    _model(folder / "good.onnx", "w.bin")
    assert outside_folder(folder / "good.onnx") is None
    assert run_cli(["run", str(folder / "good.onnx"), image, "--size", "8x8", "--json"]) == 0
