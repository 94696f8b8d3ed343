"""ONNX as a source model (issue 25, item 2): an NCHW float .onnx (onnx's bundled light SqueezeNet, opset 9, with
seeded weights) goes through convert -> parity -> run; the reference is onnxruntime on the source file, and run's
top-1 and score equal the source's own output on the same image. The user never transposes."""

from __future__ import annotations

import json

import pytest

from edgeproof.cli.main import run_cli

pytest.importorskip("onnxruntime")
cv2 = pytest.importorskip("cv2")

from _light_models import light_path, ort_scores, seeded
from test_light_models import _image


def test_an_old_opset_is_upgraded_and_the_layout_read_from_the_input():
    from edgeproof.convert.onnx_source import MIN_OPSET, OnnxSource

    src = OnnxSource(light_path("squeezenet"))
    opset = next(o.version for o in src.proto.opset_import if o.domain in ("", "ai.onnx"))
    assert (src.upgraded_from, opset, src.layout, src.inputs[0].shape) == (9, MIN_OPSET, "NCHW", (None, 224, 224, 3))
    assert src.units == 1000 and src.head() == "probabilities"  # (1, 1000, 1, 1) Softmax output


def test_a_non_image_onnx_source_is_one_line_exit_2(tmp_path, capsys):
    from test_channels import _onnx

    model = _onnx(tmp_path / "tab.onnx", [1, 10])
    assert run_cli(["convert", str(model), "--to", "onnx-fp32", "-o", str(tmp_path / "o"), "--no-progress"]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("edgeproof: error:")]
    assert len(err) == 1 and "[1, 10], a 2-D input" in err[0], err


@pytest.mark.slow
def test_an_nchw_onnx_goes_through_convert_parity_run(tmp_path, capsys):
    pytest.importorskip("onnx2tf", reason="TFLite from ONNX needs onnx2tf (make install)")
    pytest.importorskip("tensorflow", reason="needs edgeproof[train]")
    model = seeded("squeezenet", tmp_path / "squeezenet.onnx")
    photo, x_nchw = _image(tmp_path)  # the cat, and torchvision's preprocessing of it computed by hand
    want = ort_scores(model, x_nchw)[0]
    calib = tmp_path / "calib"
    calib.mkdir()
    rgb = cv2.imread(str(photo))
    for i in range(12):  # crops of the photo: real pixels for calibration and parity
        y, x = 10 * i, 15 * i
        cv2.imwrite(str(calib / f"{i:02d}.png"), rgb[y:y + 200, x:x + 260])
    out = tmp_path / "art"
    rc = run_cli(["convert", str(model), "--preset", "imagenet-torch", "--calib-data", str(calib),
                  "--to", "tflite-fp32,onnx-fp32,onnx-int8", "-o", str(out), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    manifest = json.loads((out / "manifest.json").read_text())["artifacts"]
    assert all(manifest[f]["status"] == "ok" for f in ("tflite-fp32", "onnx-fp32", "onnx-int8"))
    rc = run_cli(["parity", str(model), "--artifacts", str(out), "--data", str(calib), "-o", str(tmp_path / "par"),
                  "--no-progress", "--no-triage", "--backends", "litert,onnxruntime"])
    report = json.loads((tmp_path / "par" / "parity.json").read_text())
    fp32 = [r for r in report["results"] if r["format"] in ("tflite-fp32", "onnx-fp32")]
    assert len(fp32) == 2 and all(r["status"] == "pass" for r in fp32), fp32  # int8 of random weights may fail
    assert rc in (0, 1)
    capsys.readouterr()
    from edgeproof.runtime import load

    for art, layout in (("model.tflite-fp32.tflite", "NHWC"), ("model.onnx-fp32.onnx", "NCHW")):
        with load(out / art) as m:
            assert m.preprocess.layout == layout and m.preprocess.mean == (0.485, 0.456, 0.406)
        assert run_cli(["run", str(out / art), str(photo), "--json"]) == 0
        top = json.loads(capsys.readouterr().out.splitlines()[0])["top_k"][0]
        assert top["label"] == f"class_{int(want.argmax())}", (art, top)
        assert abs(top["score"] - float(want.max())) < 1e-3, (art, top, float(want.max()))


def test_head_flag_decides_where_the_graph_does_not_and_is_refused_where_it_contradicts():
    pytest.importorskip("keras")
    from edgeproof.convert.source import open_source
    from edgeproof.errors import UsageError

    densenet = light_path("densenet121")  # ends in a Conv: the graph does not say what its 1000 outputs are
    assert open_source(densenet, {"head": "logits"}).head == "logits"
    with pytest.raises(UsageError, match=r"--head sigmoid contradicts 'light_squeezenet.onnx', whose graph ends "
                                         r"in a Softmax \(probabilities\)"):
        open_source(light_path("squeezenet"), {"head": "sigmoid"})
