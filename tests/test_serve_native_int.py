"""Native UINT8/INT8 tensors for quantized models (issue 28 item 14): tritonclient (HTTP, binary and JSON;
gRPC raw_input_contents) sends the interpreter's own integers to a real `edgeproof serve` process and gets the
scores `edgeproof run` prints for the same images; metadata names the native datatype; a wrong datatype or
shape is a 400 / INVALID_ARGUMENT with one line.

The client quantizes by the TFLite rule q = clip(round(x / scale + zero_point)) with the scale and zero point
the server advertises, from the pixels OpenCV decodes (the models' preprocessing is the identity at 32x32).
tritonclient.http runs on gevent, so that client runs in its own process and prints JSON.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("starlette", reason="needs edgeproof[serve]")
pytest.importorskip("tensorflow", reason="the quantized test models are trained with edgeproof[train]")
grpcclient = pytest.importorskip("tritonclient.grpc", reason="needs tritonclient[grpc] (edgeproof[dev])")
pytest.importorskip("tritonclient.http", reason="needs tritonclient[http] (edgeproof[dev])")

from _runtime_models import tiny_models  # noqa: E402
from _serve_helpers import colour_model, running  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

pytestmark = pytest.mark.slow

CLIENT = r"""
import json, sys
import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

url, name, q_path, dtype = sys.argv[1:5]
c = httpclient.InferenceServerClient(url, connection_timeout=30, network_timeout=30)
q = np.load(q_path)
out = {"meta": c.get_model_metadata(name), "config": c.get_model_config(name)}
input_name = out["meta"]["inputs"][0]["name"]
for binary in (True, False):
    inp = httpclient.InferInput(input_name, list(q.shape), dtype)
    inp.set_data_from_numpy(q, binary_data=binary)
    out[f"binary_{binary}"] = c.infer(name, [inp]).as_numpy(out["meta"]["outputs"][0]["name"]).tolist()
errors = {}
other = "INT8" if dtype == "UINT8" else "UINT8"
for what, shape, dt in (("wrong datatype", q.shape, other), ("wrong shape", (1, 8, 8, 3), dtype)):
    inp = httpclient.InferInput(input_name, list(shape), dt)
    inp.set_data_from_numpy(np.zeros(shape, np.dtype(dt.lower())))
    try:
        c.infer(name, [inp])
        errors[what] = None
    except InferenceServerException as exc:
        errors[what] = [exc.status(), exc.message()]
out["errors"] = errors
print(json.dumps(out))
"""


def _run_scores(model, images) -> dict[str, dict[str, float]]:
    """`edgeproof run MODEL FOLDER --json`: per image, label -> score."""
    folder = images[0].parent.parent
    proc = subprocess.run([sys.executable, "-m", "edgeproof", "run", str(model), str(folder), "--json", "--top-k", "3"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{"index"')]
    return {r["input"]: {e["label"]: e["score"] for e in r["top_k"]} for r in rows}


def _quantize(images, scale: float, zero_point: int, dtype: str) -> np.ndarray:
    import cv2

    x = np.stack([cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in images]).astype(np.float64)
    info = np.iinfo(dtype)
    return np.clip(np.rint(x / scale + zero_point), info.min, info.max).astype(dtype)


@pytest.mark.parametrize("fmt,dtype", [("edgetpu", "UINT8"), ("tflite-int8", "INT8")])
def test_native_integer_input_gets_the_scores_run_prints(fmt, dtype, tmp_path):
    tm = tiny_models()
    model, images = tm.files[fmt], tm.images[:6]
    want = _run_scores(model, images)
    with running(model, "--grpc-port", "0") as s:
        name = model.stem
        import httpx

        meta = httpx.get(f"{s.url}/v2/models/{name}", timeout=30).json()
        assert meta["inputs"][0]["datatype"] == dtype and meta["inputs"][0]["shape"] == [-1, 32, 32, 3]
        quant = meta["parameters"]["input_quantization"]
        assert quant["datatype"] == dtype and meta["parameters"]["input_datatypes"] == [dtype, "FP32", "BYTES"]
        q = _quantize(images, quant["scale"], quant["zero_point"], dtype.lower())
        np.save(tmp_path / "q.npy", q)
        proc = subprocess.run([sys.executable, "-c", CLIENT, s.url[len("http://"):], name, str(tmp_path / "q.npy"),
                               dtype], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        got = json.loads(proc.stdout)
        target = re.search(r"gRPC at (127\.0\.0\.1:\d+)", s.line)[1]
        c = grpcclient.InferenceServerClient(target)
        input_name = meta["inputs"][0]["name"]
        inp = grpcclient.InferInput(input_name, list(q.shape), dtype)
        inp.set_data_from_numpy(q)  # raw_input_contents
        grpc_scores = c.infer(name, [inp]).as_numpy(meta["outputs"][0]["name"])
        assert c.get_model_metadata(name).inputs[0].datatype == dtype
        bad = grpcclient.InferInput(input_name, [1, 32, 32, 3], "INT8" if dtype == "UINT8" else "UINT8")
        bad.set_data_from_numpy(np.zeros((1, 32, 32, 3), np.int8 if dtype == "UINT8" else np.uint8))
        with pytest.raises(InferenceServerException) as exc:
            c.infer(name, [bad])
        assert "INVALID_ARGUMENT" in str(exc.value.status()) and f"as {dtype} [N, 32, 32, 3]" in exc.value.message()
        c.close()
        assert s.proc.poll() is None
    assert got["config"]["input"][0]["data_type"] == f"TYPE_{dtype}"
    labels, input_name = meta["parameters"]["labels"], meta["inputs"][0]["name"]
    for scores in (got["binary_True"], got["binary_False"], grpc_scores.tolist()):
        for p, row in zip(images, scores):
            assert {lb: round(v, 6) for lb, v in zip(labels, row)} == pytest.approx(want[str(p)], abs=1e-6), p.name
    for what, err in got["errors"].items():
        assert err is not None and err[0] == "400", what
        assert "\n" not in err[1] and f"expected '{input_name}' as FP32" in err[1], err  # one line naming what is valid


def test_uint8_json_values_out_of_range_and_float_models_are_400(tmp_path):
    import httpx

    tm = tiny_models()
    with running(tm.files["edgetpu"]) as s, httpx.Client(base_url=s.url, timeout=30) as c:
        name = tm.files["edgetpu"].stem
        input_name = c.get(f"/v2/models/{name}").json()["inputs"][0]["name"]

        def infer(dtype, data, shape=(1, 32, 32, 3)):
            return c.post(f"/v2/models/{name}/infer", json={"inputs": [{"name": input_name, "datatype": dtype,
                                                                           "shape": list(shape), "data": data}]})

        n = 32 * 32 * 3
        assert infer("UINT8", [7] * n).status_code == 200
        for data, why in (([300] * n, "from 0 to 255"), ([1.5] * n, "from 0 to 255"), ([True] * n, "numbers only"),
                          ([7] * (n - 1), "holds 3071 values")):
            r = infer("UINT8", data)
            assert r.status_code == 400 and why in r.json()["error"], (data[:1], r.text)
        head = json.dumps({"inputs": [{"name": input_name, "datatype": "UINT8", "shape": [1, 32, 32, 3],
                                       "parameters": {"binary_data_size": n - 5}}]}).encode()
        r = c.post(f"/v2/models/{name}/infer", content=head + bytes(n - 5),
                   headers={"inference-header-content-length": str(len(head))})
        assert r.status_code == 400 and "3067 binary bytes" in r.json()["error"]
    with running(colour_model(tmp_path / "colour.onnx")) as s, httpx.Client(base_url=s.url, timeout=30) as c:
        r = c.post("/v2/models/colour/infer", json={"inputs": [{"name": "image", "datatype": "UINT8",
                                                               "shape": [1, 32, 32, 3], "data": [0] * 3072}]})
        assert r.status_code == 400 and "FP32 [N, 32, 32, 3]" in r.json()["error"] and "UINT8" in r.json()["error"]
        assert c.get("/v2/models/colour").json()["inputs"][0]["datatype"] == "FP32"
        assert c.get("/v2/health/live").status_code == 200
