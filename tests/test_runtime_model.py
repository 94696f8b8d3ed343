"""edgeproof.runtime.load / Model: parity with Keras, quantized I/O, NCHW, batching, metadata-less models, errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeproof.contract import ArtifactMeta, Preprocess, TensorSpec
from edgeproof.errors import EdgeproofError, InvalidModel, UsageError
from edgeproof.runtime import Model, load
from edgeproof.runtime.backends.base import Backend, BatchUnsupported
from edgeproof.runtime.preprocess import load_batch

pytest.importorskip("ai_edge_litert")


@pytest.fixture(scope="module")
def tm():
    pytest.importorskip("tensorflow", reason="builds its tiny models with edgeproof[train]")
    from _runtime_models import tiny_models

    return tiny_models()


def _agreement(model, tm) -> float:
    x, used, skipped = load_batch(tm.images, model.preprocess)
    assert not skipped and len(used) == len(tm.images)
    top1 = model.predict(x).argmax(axis=1)
    return float(np.mean([t == tm.keras_top1[u] for t, u in zip(top1, used)]))


# (file key, backend, minimum top-1 agreement with Keras): fp32 exact, int8 >= 99 %.
CASES = [
    ("tflite-fp32", None, 1.0), ("bare-fp32", None, 1.0), ("tflite-int8", None, 0.99), ("bare-int8", None, 0.99),
    ("edgetpu", None, 0.99), ("bare-uint8", None, 0.99), ("onnx-fp32", None, 1.0), ("bare-onnx", None, 1.0),
    ("nchw-onnx", None, 1.0), ("onnx-fp32", "opencv", 1.0), ("nchw-onnx", "opencv", 1.0),
]


@pytest.mark.slow
@pytest.mark.parametrize("key,backend,min_agree", CASES, ids=[f"{k}-{b or 'default'}" for k, b, _ in CASES])
def test_top1_matches_keras(tm, key, backend, min_agree):
    with load(tm.files[key], backend=backend) as m:
        assert _agreement(m, tm) >= min_agree
        x, _, _ = load_batch(tm.images[:5], m.preprocess)
        p = m.predict(x)
        assert p.dtype == np.float32 and p.shape == (5, 3)
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=0.02)
        # batch N equals one-by-one
        one = np.concatenate([m.predict(x[i:i + 1]) for i in range(5)])
        np.testing.assert_allclose(p, one, atol=1e-6)


@pytest.mark.slow
def test_fp32_probabilities_close_to_keras(tm):
    with load(tm.files["tflite-fp32"]) as m:
        x, used, _ = load_batch(tm.images, m.preprocess)
        p = m.predict(x)
    ref = np.stack([tm.keras_probs[u] for u in used])
    np.testing.assert_allclose(p, ref, atol=1e-5)


@pytest.mark.slow
def test_metadata_and_synthesized_defaults(tm):
    with load(tm.files["tflite-int8"]) as m:
        assert m.labels == ["red", "green", "blue"] and m.format == "tflite-int8"
        assert m.input_spec.dtype == "int8" and m.input_spec.scale and m.input_spec.zero_point is not None
        assert m.placement["total"] > 0 and m.placement["accelerator"] == 0
    with load(tm.files["bare-fp32"]) as m:  # made elsewhere: no edgeproof metadata
        assert m.labels == ["class_0", "class_1", "class_2"]
        assert (m.preprocess.height, m.preprocess.width, m.preprocess.layout) == (32, 32, "NHWC")
        assert m.meta.extra.get("synthesized") and m.format is None and m.meta.output_kind == "auto"
    with load(tm.files["nchw-onnx"]) as m:
        assert m.preprocess.layout == "NCHW" and m.input_spec.shape[1] == 3
        assert m.placement["cpu"] == m.placement["total"] > 0


@pytest.mark.slow
def test_overrides_labels_file_and_bad_size(tm, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\n\ndog\nbird\n")
    with load(tm.files["bare-onnx"], overrides={"labels": str(labels), "mean": [1.0], "bgr": True}) as m:
        assert m.labels == ["cat", "dog", "bird"]
        assert m.preprocess.mean == (1.0, 1.0, 1.0) and m.preprocess.color == "BGR"
        assert m.topk(np.array([[0.1, 0.7, 0.2]]), k=2) == [[("dog", 0.7), ("bird", 0.2)]]
    with pytest.raises(UsageError, match="does not fit the model's fixed input 32x32"):
        load(tm.files["bare-onnx"], overrides={"size": (64, 64)})
    with pytest.raises(UsageError, match="unknown override"):
        load(tm.files["bare-onnx"], overrides={"colour": "BGR"})
    with pytest.raises(UsageError, match="labels file"):
        load(tm.files["bare-onnx"], overrides={"labels": str(tmp_path / "missing.txt")})


@pytest.mark.slow
def test_logits_model_gets_softmax(tm, tmp_path):
    """A model made elsewhere that outputs logits: the runtime notices and applies softmax."""
    import onnx

    m = onnx.load(str(tm.files["bare-onnx"]))
    g = m.graph
    soft = [n for n in g.node if n.op_type == "Softmax"]
    assert len(soft) == 1
    for n in g.node:
        for i, name in enumerate(n.input):
            if name == soft[0].output[0]:
                n.input[i] = soft[0].input[0]
    g.output[0].name = soft[0].input[0] if g.output[0].name == soft[0].output[0] else g.output[0].name
    g.node.remove(soft[0])
    path = tmp_path / "logits.onnx"
    onnx.save(m, str(path))
    with load(path) as lm, load(tm.files["bare-onnx"]) as pm:
        x, _, _ = load_batch(tm.images[:6], pm.preprocess)
        np.testing.assert_allclose(lm.predict(x), pm.predict(x), atol=1e-5)


def test_quantized_io_math_and_nchw_and_looping():
    """Model's boundary handling against a fake backend that records what it receives."""

    class Fake(Backend):
        name = "fake"

        def __init__(self, in_spec, out_spec, batch_ok):
            super().__init__("fake.tflite")
            self.input_spec, self.output_spec, self.batch_ok = in_spec, out_spec, batch_ok
            self.seen = []

        def load(self):
            pass

        def run(self, x):
            if x.shape[0] > 1:  # like an interpreter whose input cannot be resized
                self.batch_ok = False
                raise BatchUnsupported("fixed batch 1")
            self.seen.append(x.copy())
            out = np.tile(np.array([[-128, 0, 127]], np.int8), (x.shape[0], 1))
            return out.reshape(x.shape[0], 1, 3)

    in_spec = TensorSpec("x", [1, 3, 2, 2], "int8", scale=0.5, zero_point=-10)
    out_spec = TensorSpec("y", [1, 3], "int8", scale=1 / 256, zero_point=-128)
    meta = ArtifactMeta(labels=["a", "b", "c"], preprocess=Preprocess(2, 2, layout="NCHW"))
    be = Fake(in_spec, out_spec, batch_ok=True)  # claims batching, then refuses: Model falls back to a loop
    m = Model(Path("fake.tflite"), be, meta)
    x = np.array([0.0, 0.24, 0.26, -100.0, 1000.0, 3.0] * 2, np.float32).reshape(1, 2, 2, 3)
    x = np.concatenate([x, x + 1])
    p = m.predict(x)
    assert len(be.seen) == 2 and all(s.shape == (1, 3, 2, 2) and s.dtype == np.int8 for s in be.seen)
    expect = np.clip(np.rint(x / 0.5 - 10), -128, 127).astype(np.int8).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(np.concatenate(be.seen), expect)
    np.testing.assert_allclose(p, np.tile([[0.0, 0.5, 255 / 256]], (2, 1)))  # dequantized, probabilities kept
    m.predict(x)  # second call: loops directly (batch_ok is now False)
    assert len(be.seen) == 4 and not be.batch_ok
    with pytest.raises(UsageError, match=r"\(N, 2, 2, 3\)"):
        m.predict(np.zeros((1, 4, 4, 3), np.float32))


def test_load_errors(tmp_path):
    with pytest.raises(UsageError, match="unknown model suffix '.pb'"):
        load(tmp_path / "model.pb")
    with pytest.raises(UsageError, match="not found"):
        load(tmp_path / "missing.tflite")
    bad = tmp_path / "junk.tflite"
    bad.write_bytes(b"not a flatbuffer at all")
    with pytest.raises(InvalidModel, match="junk.tflite is not a valid TFLite model: no TFL3 identifier"):
        load(bad)
    with pytest.raises(UsageError, match="backend 'opencv' cannot run"):
        load(bad, backend="opencv")
    with pytest.raises(UsageError, match="unknown backend"):
        load(bad, backend="tensorrt")


@pytest.mark.slow
def test_failed_delegate_errors_or_falls_back_loudly(tm, capsys):
    with pytest.raises(EdgeproofError, match=r"delegate 'libnot_a_delegate\.so\.1' failed to load.*install"):
        load(tm.files["edgetpu"], delegates=["libnot_a_delegate.so.1"])
    with pytest.raises(EdgeproofError, match="custom install line"):
        from edgeproof.runtime.backends.litert import LiteRTBackend

        LiteRTBackend(tm.files["edgetpu"], delegates=["libnope.so"], install_hint="custom install line").load()
    with load(tm.files["edgetpu"], delegates=["libnot_a_delegate.so.1"], allow_fallback=True) as m:
        assert m.placement["accelerator"] == 0
        assert _agreement(m, tm) >= 0.99
    assert "DELEGATE FALLBACK" in capsys.readouterr().err


@pytest.mark.slow
def test_missing_execution_provider_errors_or_falls_back(tm, capsys):
    with pytest.raises(EdgeproofError, match="CUDAExecutionProvider not in this onnxruntime build"):
        load(tm.files["onnx-fp32"], providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    with load(tm.files["onnx-fp32"], providers=["CUDAExecutionProvider"], allow_fallback=True) as m:
        assert m.placement["providers"] == ["CPUExecutionProvider"]
    assert "EXECUTION PROVIDER FALLBACK" in capsys.readouterr().err


@pytest.mark.slow
def test_device_profile_applies_delegate_and_install_line(tm):
    pytest.importorskip("edgeproof.devices")
    from edgeproof.devices import get_profile

    prof = get_profile("coral")
    with pytest.raises(EdgeproofError) as exc:
        load(tm.files["edgetpu"], device="coral")
    assert prof.delegates[0] in str(exc.value) and prof.install[0][:30] in str(exc.value)


def test_import_runtime_is_tensorflow_free():
    code = ("import sys, edgeproof.runtime; from edgeproof.runtime import load, Model;"
            "import edgeproof.runtime.pipeline, edgeproof.runtime.sources, edgeproof.runtime.annotate;"
            "import edgeproof.runtime.backends.litert, edgeproof.runtime.backends.onnxrt,"
            " edgeproof.runtime.backends.opencv_dnn;"
            "bad = [k for k in sys.modules if k.split('.')[0] in ('tensorflow', 'keras', 'onnxruntime', 'cv2')];"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_quiet_runtime_info_drops_only_the_info_lines(capfd):
    import os

    from edgeproof.runtime.backends.litert import quiet_runtime_info

    with quiet_runtime_info():
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\nERROR: a real problem\n")
    assert capfd.readouterr().err == "ERROR: a real problem\n"


def test_damaged_tflite_metadata_is_an_error_not_a_silent_default(tmp_path):
    import io
    import zipfile

    from edgeproof.errors import UsageError
    from edgeproof.runtime.metadata import TFLITE_MEMBER, read_metadata

    for text in ("{broken", "{}"):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr(TFLITE_MEMBER, text)
        path = tmp_path / "m.tflite"
        path.write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(64) + buf.getvalue())
        with pytest.raises(UsageError, match="carries edgeproof metadata that cannot be read"):
            read_metadata(path)
