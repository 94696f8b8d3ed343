"""`edgeproof serve` endpoints, against a real server process on 127.0.0.1 and a real HTTP client."""

from __future__ import annotations

import base64
import json
import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("starlette", reason="needs edgeproof[serve]")
pytest.importorskip("onnx", reason="the test models are built with onnx")

from _serve_helpers import LABELS, SIZE, colour_model, jpeg_bytes, png_bytes, running

RED, GREEN, BLUE = (200, 30, 30), (30, 200, 30), (30, 30, 200)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return colour_model(tmp_path_factory.mktemp("serve") / "colour.onnx")


@pytest.fixture(scope="module")
def server(model_path):
    with running(model_path, "--batch-timeout-ms", "20", "--max-batch", "8") as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def local(model_path):
    """The same model in-process: what the server must answer, score for score."""
    from edgeproof.runtime import load
    from edgeproof.runtime.preprocess import decode, prepare

    m = load(model_path)
    yield lambda data: m.predict(prepare(decode(data), m.preprocess)[None])[0]
    m.close()


def _scores(top_k) -> dict[str, float]:
    return {e["label"]: e["score"] for e in top_k}


def test_startup_line_names_url_model_backend_and_batching(server):
    assert re.search(r"serving colour\.onnx as 'colour' at http://127\.0\.0\.1:\d+/", server.line)
    assert "onnxruntime" in server.line and "batches of up to 8" in server.line
    assert "no auth (loopback only)" in server.line


@pytest.mark.parametrize("make,colour,label", [(png_bytes, RED, "red"), (jpeg_bytes, GREEN, "green"),
                                               (png_bytes, BLUE, "blue")])
def test_classify_raw_body_matches_the_in_process_model(client, local, make, colour, label):
    data = make(colour)
    ctype = "image/png" if data[:4] == b"\x89PNG" else "image/jpeg"
    r = client.post("/v1/classify", content=data, headers={"content-type": ctype})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["top_k"][0]["label"] == label
    scores = [e["score"] for e in body["top_k"]]
    assert scores == sorted(scores, reverse=True) and sorted(_scores(body["top_k"])) == sorted(LABELS)
    want = local(data)
    got = _scores(body["top_k"])
    for i, lb in enumerate(LABELS):
        assert got[lb] == pytest.approx(float(want[i]), abs=1e-6)
    assert body["model"] == {"name": "colour", "format": "onnx-fp32", "backend": "onnxruntime"}
    assert body["latency_ms"] > 0 and body["inference_ms"] > 0 and body["batch_size"] >= 1


def test_classify_multipart_several_images_are_one_batch_in_order(client):
    files = [("image", ("a.png", png_bytes(RED), "image/png")), ("image", ("b.jpg", jpeg_bytes(BLUE), "image/jpeg")),
             ("photo", ("c.png", png_bytes(GREEN), "image/png"))]
    r = client.post("/v1/classify?top_k=1", files=files)
    assert r.status_code == 200, r.text
    body = r.json()
    assert [res["top_k"][0]["label"] for res in body["results"]] == ["red", "blue", "green"]
    assert [res["image"] for res in body["results"]] == ["image 1 ('a.png')", "image 2 ('b.jpg')", "image 3 ('c.png')"]
    assert all(len(res["top_k"]) == 1 for res in body["results"])
    assert body["batch_size"] >= 3  # the three images went through one inference call


def test_multipart_with_one_file_answers_like_a_raw_body(client):
    r = client.post("/v1/classify", files={"image": ("x.png", png_bytes(GREEN), "image/png")})
    assert r.status_code == 200 and r.json()["top_k"][0]["label"] == "green"


@pytest.mark.parametrize("k,n", [("1", 1), ("2", 2), ("99", 3)])
def test_top_k(client, k, n):
    r = client.post(f"/v1/classify?top_k={k}", content=png_bytes(RED), headers={"content-type": "image/png"})
    assert r.status_code == 200 and len(r.json()["top_k"]) == n


@pytest.mark.parametrize("k", ["0", "-2", "abc"])
def test_bad_top_k_is_400(client, k):
    r = client.post(f"/v1/classify?top_k={k}", content=png_bytes(RED), headers={"content-type": "image/png"})
    assert r.status_code == 400 and "top_k" in r.json()["error"]


def test_concurrent_requests_are_coalesced_into_batches(model_path):
    """12 clients post at once (a barrier), 24 images in all. The batching window is 500 ms here, not the module
    server's 20 ms: on a loaded 2-core CI machine the requests of one burst can reach the server more than 20 ms
    apart, and the test is about coalescing, not about how fast this machine schedules threads."""
    import threading

    images = [(png_bytes(c, seed=i), c) for i, c in enumerate([RED, GREEN, BLUE] * 8)]
    start = threading.Barrier(12)

    with running(model_path, "--batch-timeout-ms", "500", "--max-batch", "8") as server, \
            httpx.Client(base_url=server.url, timeout=30) as client:
        def one(item):
            data, colour = item
            start.wait(timeout=30)  # two rounds of 12: the barrier resets after each
            r = client.post("/v1/classify", content=data, headers={"content-type": "image/png"})
            return r.status_code, r.json(), colour

        with ThreadPoolExecutor(12) as pool:
            results = list(pool.map(one, images))
    names = {RED: "red", GREEN: "green", BLUE: "blue"}
    assert all(code == 200 and body["top_k"][0]["label"] == names[c] for code, body, c in results)
    sizes = [body["batch_size"] for _, body, _ in results]
    assert max(sizes) > 1, sizes  # coalesced ...
    assert max(sizes) <= 8, sizes  # ... never over --max-batch


def test_oip_server_and_health(client):
    r = client.get("/v2")
    assert r.status_code == 200
    meta = r.json()
    assert meta["name"] == "edgeproof" and meta["version"] and "classification" in meta["extensions"]
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2/models/colour/ready").json() == {"name": "colour", "ready": True}


def test_oip_model_metadata(client):
    for path in ("/v2/models/colour", "/v2/models/colour/versions/1"):
        meta = client.get(path).json()
        assert meta["name"] == "colour" and meta["versions"] == ["1"] and meta["platform"] == "onnx_onnxruntime"
        assert meta["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, SIZE, SIZE, 3]}]
        assert meta["outputs"] == [{"name": "probs", "datatype": "FP32", "shape": [-1, 3]}]
    r = client.get("/v2/models/other")
    assert r.status_code == 404 and "'colour'" in r.json()["error"]
    assert client.get("/v2/models/colour/versions/7").status_code == 404


def test_oip_infer_fp32_tensor_in_model_input_space(client, model_path):
    from edgeproof.runtime import load
    from edgeproof.runtime.preprocess import decode, prepare

    with load(model_path) as m:
        x = np.stack([prepare(decode(png_bytes(c)), m.preprocess) for c in (RED, BLUE)])
        want = m.predict(x)
    req = {"id": "req-7", "inputs": [{"name": "image", "shape": list(x.shape), "datatype": "FP32",
                                      "data": x.ravel().tolist()}]}
    r = client.post("/v2/models/colour/infer", json=req)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_name"] == "colour" and body["id"] == "req-7"
    (out,) = body["outputs"]
    assert out["name"] == "probs" and out["datatype"] == "FP32" and out["shape"] == [2, 3]
    np.testing.assert_allclose(np.array(out["data"]).reshape(2, 3), want, atol=1e-6)


def test_oip_infer_bytes_images_and_classification_extension(client):
    data = [base64.b64encode(png_bytes(c)).decode() for c in (GREEN, RED)]
    req = {"inputs": [{"name": "image", "shape": [2], "datatype": "BYTES", "data": data}],
           "outputs": [{"name": "probs", "parameters": {"classification": 2}}, {"name": "probs"}]}
    r = client.post("/v2/models/colour/infer", json=req)
    assert r.status_code == 200, r.text
    cls, probs = r.json()["outputs"]
    assert cls["datatype"] == "BYTES" and cls["shape"] == [2, 2]
    assert [s.split(":")[2] for s in cls["data"][::2]] == ["green", "red"]
    score, index, label = cls["data"][0].split(":")
    assert LABELS[int(index)] == label and float(score) > 0.5
    assert probs["shape"] == [2, 3] and np.argmax(np.array(probs["data"]).reshape(2, 3), axis=1).tolist() == [1, 0]


@pytest.mark.parametrize("inputs,needle", [
    ([{"name": "image", "shape": [1, 8, 8, 3], "datatype": "FP32", "data": [0.0] * 192}], "FP32 [N, 32, 32, 3]"),
    ([{"name": "image", "shape": [1, SIZE, SIZE, 3], "datatype": "INT64", "data": [0] * SIZE * SIZE * 3}],
     "expected 'image' as FP32"),
    ([{"name": "image", "shape": [1, SIZE, SIZE, 3], "datatype": "FP32", "data": [0.0] * 5}], "holds 5"),
    ([{"name": "pixels", "shape": [1], "datatype": "BYTES", "data": ["aGk="]}], "unknown input 'pixels'"),
    ([{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["@@not base64@@"]}], "not base64"),
    ([{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["aGVsbG8gd29ybGQ="]}], "looks like text"),
    ([{"name": "image", "shape": [2], "datatype": "BYTES", "data": ["aGk="]}], "1 element"),
    ([], "exactly one tensor"),
])
def test_oip_bad_tensors_are_400_naming_what_is_expected(client, inputs, needle):
    r = client.post("/v2/models/colour/infer", json={"inputs": inputs})
    assert r.status_code == 400, r.text
    assert needle in r.json()["error"]


def test_oip_bad_json_unknown_output_and_nan(client):
    r = client.post("/v2/models/colour/infer", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not JSON" in r.json()["error"]
    inp = {"name": "image", "shape": [1, SIZE, SIZE, 3], "datatype": "FP32", "data": [1.0] * (SIZE * SIZE * 3)}
    r = client.post("/v2/models/colour/infer", json={"inputs": [inp], "outputs": [{"name": "logits"}]})
    assert r.status_code == 400 and "output is 'probs'" in r.json()["error"]
    bad = dict(inp, data=[float("nan")] + [1.0] * (SIZE * SIZE * 3 - 1))
    r = client.post("/v2/models/colour/infer", content=json.dumps({"inputs": [bad]}),
                    headers={"content-type": "application/json"})
    assert r.status_code == 400 and "NaN" in r.json()["error"]


def test_model_card(client):
    card = client.get("/v1/model").json()
    assert card["labels"] == LABELS and card["format"] == "onnx-fp32" and card["backend"] == "onnxruntime"
    assert card["placement"]["where"] and card["file"] == "colour.onnx"
    assert card["parity"] is None and card["ready"] is True
    assert card["serving"]["max_batch"] == 8 and card["serving"]["backend_can_batch"] is True
    assert "/" not in card["file"]  # no server path goes out


def test_page_and_its_assets_come_from_the_package(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert '<input id="file" type="file" accept="image/*" capture="environment">' in r.text
    assert 'name="viewport"' in r.text and "http" not in r.text.split("<body>")[0].replace("http-equiv", "")
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert client.get("/static/app.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/static/style.css").status_code == 200
    assert client.get("/static/../config.py").status_code == 404


def test_metrics_in_prometheus_text_format(client):
    client.post("/v1/classify", content=png_bytes(RED), headers={"content-type": "image/png"})
    client.post("/v1/classify", content=b"\x89PNG\r\n\x1a\n" + b"\0" * 20, headers={"content-type": "image/png"})
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert re.search(r'edgeproof_requests_total\{endpoint="v1_classify",status="200"\} [1-9]', text)
    assert re.search(r'edgeproof_requests_total\{endpoint="v1_classify",status="400"\} [1-9]', text)
    for name in ("edgeproof_request_duration_seconds_bucket", "edgeproof_inference_duration_seconds_count",
                 "edgeproof_queue_duration_seconds_count", "edgeproof_batch_size_bucket",
                 "edgeproof_requests_in_flight", 'edgeproof_model_load_seconds{model="colour"}', "edgeproof_ready 1.0",
                 'edgeproof_images_rejected_total{reason="truncated PNG"}'):
        assert name in text, name
