"""Triage on an ONNX source (issue 25, item 2): int8 made to fail on purpose in a model the user brings as an NCHW
.onnx; `parity model.onnx --fix` must name the outlier layer by the source's own ONNX node and repair both int8
artifacts. The TFLite side is converted by onnx2tf, whose tensor names do not map back to ONNX nodes: triage
still ranks them (and --fix denylists them by those names), names no layer, and says why."""

from __future__ import annotations

import json

import pytest

from edgeproof.cli.main import run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def outlier_onnx(shapes_dir, tmp_path_factory):
    """The outlier Keras model (_parity_helpers) exported as a PyTorch user's file: NCHW input, a bare .onnx."""
    pytest.importorskip("onnx2tf", reason="TFLite from ONNX needs onnx2tf (make install)")
    pytest.importorskip("tensorflow", reason="needs edgeproof[train]")
    import keras
    import tensorflow as tf
    import tf2onnx
    from _parity_helpers import outlier_run

    base = tmp_path_factory.mktemp("outlier_onnx")
    run = outlier_run(shapes_dir, base / "run")
    model = keras.models.load_model(run / "model.keras", compile=False)
    spec = tf.TensorSpec((None, 32, 32, 3), tf.float32, name="input")

    @tf.function(input_signature=[spec])
    def serve(input):  # noqa: A002 - the ONNX input's name
        return {"output": model(input, training=False)}

    proto, _ = tf2onnx.convert.from_function(serve, input_signature=[spec], opset=17, inputs_as_nchw=["input"])
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim][1:] == [3, 32, 32]
    path = base / "model.onnx"
    path.write_bytes(proto.SerializeToString())
    return path, proto


def test_triage_and_fix_on_an_onnx_source_name_its_outlier_node(outlier_onnx, shapes_dir, tmp_path, capsys):
    model, proto = outlier_onnx
    labels = ",".join(sorted(p.name for p in (shapes_dir / "train").iterdir() if p.is_dir()))
    art = tmp_path / "art"
    assert run_cli(["convert", str(model), "--preset", "raw", "--labels", labels, "--calib-data",
                    str(shapes_dir / "train"), "--to", "tflite-int8,onnx-fp32,onnx-int8", "-o", str(art),
                    "--no-int8-search", "--no-auto-fix", "--allow-failing", "--no-progress"]) == 0
    capsys.readouterr()
    code = run_cli(["parity", str(model), "--artifacts", str(art), "--data", str(shapes_dir / "test"), "--fix",
                    "--backends", "litert,onnxruntime", "--no-e2e", "--json", "-o", str(tmp_path / "rep")])
    data = json.loads(capsys.readouterr().out)
    assert code == 1 and {f["artifact"] for f in data["failures"]} == {"model.tflite-int8.tflite",
                                                                       "model.onnx-int8.onnx"}
    triage = {t["artifact"]: t for t in data["triage"]}
    # the node of the source that makes the outlier Dense's output, read from the file the user gave
    outlier_nodes = {n.name for n in proto.graph.node if "outlier_dense" in n.name}
    onnx_t = triage["model.onnx-int8.onnx"]
    assert onnx_t["error"] is None
    top = onnx_t["layers"][0]
    assert top["suspect"] and "channel SNR" in top["reason"] and top["layer"] in outlier_nodes, top
    tfl = triage["model.tflite-int8.tflite"]
    assert tfl["error"] is None and tfl["layers"][0]["suspect"], tfl["layers"][:2]
    assert all(le["layer"] is None for le in tfl["layers"]) and any("onnx2tf" in n for n in tfl["notes"])
    for t in (onnx_t, tfl):  # the ladder re-exports from the ONNX source (onnx2tf's SavedModel for TFLite)
        assert t["fixes"] and t["fixes"][-1]["status"] == "pass", [(f["variant"], f["status"]) for f in t["fixes"]]
