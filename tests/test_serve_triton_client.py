"""An existing Open Inference Protocol client works unchanged: NVIDIA's tritonclient (HTTP), with its defaults
(binary tensor data) and in JSON mode, against a real `edgeproof serve` process.

tritonclient.http runs on gevent, so the client runs in its own process (gevent never loads into the test
session); it prints what it received as JSON and the assertions are made here.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("starlette", reason="needs edgeproof[serve]")
pytest.importorskip("onnx", reason="the test models are built with onnx")
if importlib.util.find_spec("tritonclient") is None:
    pytest.skip("needs tritonclient[http] (edgeproof[dev])", allow_module_level=True)

from _serve_helpers import SIZE, colour_model, png_bytes, running

RED, BLUE = (210, 20, 20), (20, 20, 210)

CLIENT = r"""
import json, sys
import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

url, x_path, red_path, blue_path = sys.argv[1:5]
c = httpclient.InferenceServerClient(url, connection_timeout=30, network_timeout=30)
out = {"live": c.is_server_live(), "ready": c.is_server_ready(), "model_ready": c.is_model_ready("colour"),
       "server": c.get_server_metadata(), "meta": c.get_model_metadata("colour"), "config": c.get_model_config("colour")}
x = np.load(x_path)
for binary in (True, False):
    inp = httpclient.InferInput("image", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    r = c.infer("colour", [inp], outputs=[httpclient.InferRequestedOutput("probs", binary_data=binary)], request_id="r1")
    out[f"fp32_binary_{binary}"] = {"probs": r.as_numpy("probs").tolist(), "id": r.get_response()["id"]}
images = np.array([open(red_path, "rb").read(), open(blue_path, "rb").read()], dtype=np.object_)
inp = httpclient.InferInput("image", [2], "BYTES")
inp.set_data_from_numpy(images)  # binary, as Triton's image clients send it
r = c.infer("colour", [inp], outputs=[httpclient.InferRequestedOutput("probs", class_count=2)])
out["classification"] = [[v.decode() for v in row] for row in r.as_numpy("probs")]
out["bytes_all_outputs"] = c.infer("colour", [inp]).as_numpy("probs").tolist()
bad = httpclient.InferInput("image", [1, 8, 8, 3], "FP32")
bad.set_data_from_numpy(np.zeros((1, 8, 8, 3), np.float32))
try:
    c.infer("colour", [bad])
    out["bad_shape_error"] = None
except InferenceServerException as exc:
    out["bad_shape_error"] = str(exc)
c.close()
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    from edgeproof.runtime import load
    from edgeproof.runtime.preprocess import decode, prepare

    root = tmp_path_factory.mktemp("triton")
    model = colour_model(root / "colour.onnx")
    red, blue = root / "red.png", root / "blue.png"
    red.write_bytes(png_bytes(RED))
    blue.write_bytes(png_bytes(BLUE, seed=3))
    with load(model) as m:
        x = np.stack([prepare(decode(p.read_bytes()), m.preprocess) for p in (red, blue)]).astype(np.float32)
        want = m.predict(x)
    np.save(root / "x.npy", x)
    with running(model) as s:
        out = subprocess.run([sys.executable, "-c", CLIENT, s.url.removeprefix("http://"), str(root / "x.npy"),
                              str(red), str(blue)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1]), want


def test_health_and_metadata_through_tritonclient(results):
    got, _ = results
    assert got["live"] and got["ready"] and got["model_ready"]
    assert "binary_tensor_data" in got["server"]["extensions"]
    assert got["meta"]["inputs"][0] == {"name": "image", "datatype": "FP32", "shape": [-1, SIZE, SIZE, 3]}
    assert got["config"]["max_batch_size"] == 8 and got["config"]["input"][0]["format"] == "FORMAT_NHWC"


@pytest.mark.parametrize("binary", [True, False])
def test_fp32_tensor_infer(results, binary):
    got, want = results
    r = got[f"fp32_binary_{binary}"]
    np.testing.assert_allclose(np.array(r["probs"]), want, atol=1e-6)
    assert r["id"] == "r1"


def test_encoded_images_as_bytes_with_the_classification_extension(results):
    got, want = results
    top = got["classification"]
    assert [row[0].split(":")[2] for row in top] == ["red", "blue"] and all(len(row) == 2 for row in top)
    assert float(top[0][0].split(":")[0]) == pytest.approx(float(want[0].max()), abs=1e-5)
    np.testing.assert_allclose(np.array(got["bytes_all_outputs"]), want, atol=1e-6)


def test_a_wrong_shape_is_an_error_the_client_reports(results):
    got, _ = results
    assert got["bad_shape_error"] and "FP32 [N, 32, 32, 3]" in got["bad_shape_error"]
