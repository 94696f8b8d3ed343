"""The onnx package's light_* ImageNet models (issue 25, item 4's regression): an (N, 1000, 1, 1) output, as the
ONNX exports of SqueezeNet (softmax) and DenseNet-121 (logits, a final Conv) give, is class scores; a real
(N, C, H, W) feature map is still refused."""

from __future__ import annotations

import numpy as np
import pytest

from edgeproof.errors import UsageError

pytest.importorskip("onnxruntime")
cv2 = pytest.importorskip("cv2")

from _light_models import light_path, ort_scores, seeded

MEAN, STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)  # torchvision's ImageNet mean/std x 255


def _image(tmp_path):
    """A real photo (scikit-image's cat), as a PNG file and as the NCHW float32 batch torchvision's
    preprocessing makes of it (resize to 224x224 bilinear, RGB, (x - mean) / std), computed here by hand."""
    data = pytest.importorskip("skimage.data")
    rgb = data.chelsea()
    path = tmp_path / "cat.png"
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    x = cv2.resize(rgb, (224, 224), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    x = (x - np.float32(MEAN)) / np.float32(STD)
    return path, x.transpose(2, 0, 1)[None].astype(np.float32)


@pytest.mark.parametrize("name", ["squeezenet", "densenet121"])
def test_the_bundled_model_with_a_1000x1x1_output_runs(name):
    from edgeproof.runtime import load

    with load(light_path(name)) as m:  # onnx's file as shipped: every class scores alike
        scores = m.predict(np.zeros((1, 224, 224, 3), np.float32))
    assert scores.shape == (1, 1000) and np.allclose(scores, 1 / 1000, atol=1e-4)


@pytest.mark.parametrize("name,head", [("squeezenet", "probabilities"), ("densenet121", "logits")])
def test_scores_are_the_models_own_output(tmp_path, name, head):
    """Seeded weights: edgeproof's scores equal onnxruntime's output on the hand-made NCHW batch (densenet's
    logits through a softmax), so the (1, 1000, 1, 1) output is read as 1000 class scores in order."""
    from edgeproof.runtime import load
    from edgeproof.runtime.preprocess import load_image

    path, x_nchw = _image(tmp_path)
    model = seeded(name, tmp_path / f"{name}.onnx")
    want = ort_scores(model, x_nchw)
    if head == "logits":
        e = np.exp(want - want.max())
        want = e / e.sum()
    with load(model, overrides={"mean": MEAN, "std": STD}) as m:
        assert m.preprocess.layout == "NCHW"
        got = m.predict(load_image(path, m.preprocess)[None])
    assert got.shape == (1, 1000)
    assert int(got.argmax()) == int(want.argmax()) and np.abs(got - want).max() < 1e-4


def test_a_real_nchw_feature_map_is_still_refused(tmp_path):
    """SqueezeNet cut before its global pooling: conv10's (1, 1000, 13, 13) map is not class scores."""
    from edgeproof.runtime import load

    model = seeded("squeezenet", tmp_path / "fmap.onnx", output="r64")
    with pytest.raises(UsageError, match=r"a feature map, not class scores"):
        with load(model) as m:
            m.predict(np.zeros((1, 224, 224, 3), np.float32))


def test_the_run_command_reads_a_1000x1x1_output(tmp_path, capsys):
    import json

    from edgeproof.cli.main import run_cli

    path, x_nchw = _image(tmp_path)
    model = seeded("squeezenet", tmp_path / "squeezenet.onnx")
    want = ort_scores(model, x_nchw)[0]
    argv = ["run", str(model), str(path), "--json", "--mean", ",".join(map(str, MEAN)), "--std", ",".join(map(str, STD))]
    for flags in (argv, ["run", str(model), str(path), "--json", "--preset", "imagenet-torch"]):
        assert run_cli(flags) == 0
        top = json.loads(capsys.readouterr().out.splitlines()[0])["top_k"][0]
        assert top["label"] == f"class_{int(want.argmax())}" and abs(top["score"] - float(want.max())) < 1e-3


def test_each_preset_is_the_documented_contract():
    """--preset NAME gives the same contract as the explicit flags documented for it (README, --help)."""
    from edgeproof.cli.contract_flags import overrides_from
    from edgeproof.cli.main import parse_args

    def ov(*flags):
        return overrides_from(parse_args(["run", "m.onnx", "i.png", *flags]))

    assert ov("--preset", "imagenet-torch") == {"scale": 1 / 255, "mean": [0.485, 0.456, 0.406],
                                                "std": [0.229, 0.224, 0.225]}
    assert ov("--preset", "imagenet-caffe") == {"scale": 1.0, "mean": [103.939, 116.779, 123.68], "std": [1.0],
                                                "bgr": True}
    assert ov("--preset", "tf-inception") == {"scale": 1 / 127.5, "mean": [1.0], "std": [1.0]}
    assert ov("--preset", "unit")["scale"] == 1 / 255 and ov("--preset", "raw")["scale"] == 1.0
    assert ov("--preset", "unit", "--scale", "0.5", "--bgr")["scale"] == 0.5  # an explicit flag beats the preset
