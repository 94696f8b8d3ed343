"""OIP v2 over gRPC (issue 28 item 9): tritonclient.grpc, unchanged, against a real `edgeproof serve --grpc-port`
process: the same scores as HTTP and as the runtime (`run`), the same key and limits."""

from __future__ import annotations

import re

import numpy as np
import pytest

pytest.importorskip("starlette", reason="needs edgeproof[serve]")
grpcclient = pytest.importorskip("tritonclient.grpc", reason="needs tritonclient[grpc] (edgeproof[dev])")

from _serve_helpers import KEY, colour_model, png_bytes, running  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

RED, BLUE = (210, 20, 20), (20, 20, 210)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return colour_model(tmp_path_factory.mktemp("grpc") / "colour.onnx")


def _target(server) -> str:
    m = re.search(r"gRPC at (127\.0\.0\.1:\d+)", server.line)
    assert m, server.line
    return m[1]


def _expected(model, images: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    from edgeproof.runtime import load
    from edgeproof.runtime.preprocess import decode, prepare

    with load(model) as m:
        x = np.stack([prepare(decode(b), m.preprocess) for b in images]).astype(np.float32)
        return x, m.predict(x)


def test_tritonclient_grpc_gets_the_scores_http_and_run_get(model):
    import httpx

    images = [png_bytes(RED), png_bytes(BLUE, seed=3)]
    x, want = _expected(model, images)
    with running(model, "--grpc-port", "0") as s:
        c = grpcclient.InferenceServerClient(_target(s))
        assert c.is_server_live() and c.is_server_ready() and c.is_model_ready("colour")
        assert not c.is_model_ready("other")
        assert c.get_server_metadata().name == "edgeproof"
        meta = c.get_model_metadata("colour")
        assert [list(t.shape) for t in meta.inputs] == [[-1, 32, 32, 3]] and meta.outputs[0].name == "probs"
        fp32 = grpcclient.InferInput("image", list(x.shape), "FP32")
        fp32.set_data_from_numpy(x)  # raw_input_contents, as tritonclient sends it
        got = c.infer("colour", [fp32], request_id="r1")
        assert got.get_response().id == "r1"
        np.testing.assert_allclose(got.as_numpy("probs"), want, rtol=1e-6, atol=1e-7)
        enc = grpcclient.InferInput("image", [2], "BYTES")
        enc.set_data_from_numpy(np.array(images, dtype=np.object_))
        top = c.infer("colour", [enc], outputs=[grpcclient.InferRequestedOutput("probs", class_count=1)])
        assert [row[0].decode().split(":")[2] for row in top.as_numpy("probs")] == ["red", "blue"]
        http = httpx.post(s.url + "/v2/models/colour/infer", json={"inputs": [
            {"name": "image", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]}).json()
        np.testing.assert_allclose(np.array(http["outputs"][0]["data"]).reshape(want.shape),
                                   got.as_numpy("probs"), rtol=1e-6, atol=1e-7)
        bad = grpcclient.InferInput("image", [1, 8, 8, 3], "FP32")
        bad.set_data_from_numpy(np.zeros((1, 8, 8, 3), np.float32))
        with pytest.raises(InferenceServerException, match="INVALID_ARGUMENT.*expected 'image' as FP32"):
            c.infer("colour", [bad])
        c.close()


def test_grpc_needs_the_key_like_http_and_keeps_the_body_limit(model, tmp_path):
    kf = tmp_path / "key.txt"
    kf.write_text(KEY)
    kf.chmod(0o600)
    x = np.zeros((1, 32, 32, 3), np.float32)
    with running(model, "--grpc-port", "0", "--api-key-file", str(kf), "--max-body", "64K") as s:
        c = grpcclient.InferenceServerClient(_target(s))
        assert c.is_server_live() and c.is_model_ready("colour")  # public, as over HTTP
        inp = grpcclient.InferInput("image", [1, 32, 32, 3], "FP32")
        inp.set_data_from_numpy(x)
        for headers in (None, {"authorization": "Bearer wrong-key-0123456789"}):
            with pytest.raises(InferenceServerException, match="UNAUTHENTICATED"):
                c.infer("colour", [inp], headers=headers)
        with pytest.raises(InferenceServerException, match="UNAUTHENTICATED"):
            c.get_model_metadata("colour")
        r = c.infer("colour", [inp], headers={"authorization": f"bearer {KEY}"})
        assert r.as_numpy("probs").shape == (1, 3)
        big = grpcclient.InferInput("image", [8, 32, 32, 3], "FP32")  # 98 KB: over --max-body 64K
        big.set_data_from_numpy(np.zeros((8, 32, 32, 3), np.float32))
        with pytest.raises(InferenceServerException, match="RESOURCE_EXHAUSTED"):
            c.infer("colour", [big], headers={"authorization": f"Bearer {KEY}"})
        c.close()
        assert s.proc.poll() is None
