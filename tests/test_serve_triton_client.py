"""An existing Open Inference Protocol client works unchanged: NVIDIA's tritonclient (HTTP), with its defaults
(binary tensor data) and in JSON mode, against a real `edgeproof serve` process."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("starlette", reason="needs edgeproof[serve]")
pytest.importorskip("onnx", reason="the test models are built with onnx")
httpclient = pytest.importorskip("tritonclient.http", reason="needs tritonclient[http] (edgeproof[dev])")
from _serve_helpers import SIZE, colour_model, png_bytes, running
from tritonclient.utils import InferenceServerException

RED, BLUE = (210, 20, 20), (20, 20, 210)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    model = colour_model(tmp_path_factory.mktemp("triton") / "colour.onnx")
    with running(model) as s:
        client = httpclient.InferenceServerClient(s.url.removeprefix("http://"), connection_timeout=30,
                                                  network_timeout=30)
        yield client, model
        client.close()


def _local(model, images: list[bytes]) -> np.ndarray:
    from edgeproof.runtime import load
    from edgeproof.runtime.preprocess import decode, prepare

    with load(model) as m:
        return m.predict(np.stack([prepare(decode(b), m.preprocess) for b in images]))


def test_health_and_metadata_through_tritonclient(served):
    client, _ = served
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("colour")
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    meta = client.get_model_metadata("colour")
    assert meta["inputs"][0] == {"name": "image", "datatype": "FP32", "shape": [-1, SIZE, SIZE, 3]}
    cfg = client.get_model_config("colour")
    assert cfg["max_batch_size"] == 8 and cfg["input"][0]["format"] == "FORMAT_NHWC"


@pytest.mark.parametrize("binary", [True, False])
def test_fp32_tensor_infer(served, binary):
    client, model = served
    from edgeproof.runtime import load
    from edgeproof.runtime.preprocess import decode, prepare

    with load(model) as m:
        x = np.stack([prepare(decode(png_bytes(c)), m.preprocess) for c in (RED, BLUE)]).astype(np.float32)
        want = m.predict(x)
    inp = httpclient.InferInput("image", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    out = httpclient.InferRequestedOutput("probs", binary_data=binary)
    result = client.infer("colour", [inp], outputs=[out], request_id="r1")
    np.testing.assert_allclose(result.as_numpy("probs"), want, atol=1e-6)
    assert result.get_response()["id"] == "r1"


def test_encoded_images_as_bytes_with_the_classification_extension(served):
    client, model = served
    images = [png_bytes(RED), png_bytes(BLUE, seed=3)]
    inp = httpclient.InferInput("image", [2], "BYTES")
    inp.set_data_from_numpy(np.array(images, dtype=np.object_))  # binary, as Triton's image clients send it
    result = client.infer("colour", [inp], outputs=[httpclient.InferRequestedOutput("probs", class_count=2)])
    top = result.as_numpy("probs")
    assert top.shape == (2, 2)
    assert [row[0].decode().split(":")[2] for row in top] == ["red", "blue"]
    want = _local(model, images)
    assert float(top[0][0].decode().split(":")[0]) == pytest.approx(float(want[0].max()), abs=1e-5)
    result = client.infer("colour", [inp])  # no outputs asked: every output, binary
    np.testing.assert_allclose(result.as_numpy("probs"), want, atol=1e-6)


def test_a_wrong_shape_is_an_error_the_client_reports(served):
    client, _ = served
    x = np.zeros((1, 8, 8, 3), np.float32)
    inp = httpclient.InferInput("image", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    with pytest.raises(InferenceServerException, match=r"FP32 \[N, 32, 32, 3\]"):
        client.infer("colour", [inp])
