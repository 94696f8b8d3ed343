"""A model repository (issue 28 item 10) against a real server: Triton's layout, the OIP repository extension
over HTTP and gRPC behind the key, per-model readiness and metrics, a broken model reported without taking the
others down, and --max-models-loaded with least-recently-used unloading, under load."""

from __future__ import annotations

import shutil
import threading
import time

import httpx
import pytest
from _serve_helpers import KEY, colour_model, png_bytes, running

RED = png_bytes((210, 20, 20))


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    src = colour_model(root / "src.onnx")
    for rel in ("alpha/1/model.onnx", "beta/model.onnx", "gamma/1/m.onnx", "gamma/2/m.onnx"):
        (root / "models" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, root / "models" / rel)
    (root / "models" / "broken" / "1").mkdir(parents=True)
    (root / "models" / "broken" / "1" / "model.onnx").write_bytes(b"this is not an onnx model")
    (root / "models" / "empty").mkdir()
    return root / "models"


def _classify(c, model: str | None = None, version: str | None = None) -> httpx.Response:
    params = {k: v for k, v in (("model", model), ("version", version)) if v}
    return c.post("/v1/classify", params=params, content=RED, headers={"content-type": "image/png"})


def _states(c, headers=None) -> dict:
    r = c.post("/v2/repository/index", headers=headers)
    assert r.status_code == 200, r.text
    return {(m["name"], m["version"]): (m["state"], m["reason"]) for m in r.json()}


def test_every_model_is_served_and_a_broken_one_is_reported(repo):
    import tritonclient.grpc as grpcclient

    with running(repo, "--grpc-port", "0") as s, httpx.Client(base_url=s.url) as c:
        assert "model repository: 5 model(s), 3 loaded: alpha, beta, gamma" in s.line + s.proc.stdout.readline()
        states = _states(c)
        for key in (("alpha", "1"), ("beta", "1"), ("gamma", "1"), ("gamma", "2")):
            assert states[key] == ("READY", ""), key
        assert states[("broken", "1")][0] == "UNAVAILABLE" and "not a valid ONNX" in states[("broken", "1")][1]
        assert states[("empty", "1")] == ("UNAVAILABLE", "empty/ holds no .tflite or .onnx file")
        for name in ("alpha", "beta", "gamma"):
            r = _classify(c, name)
            assert r.status_code == 200 and r.json()["top_k"][0]["label"] == "red" and r.json()["model"]["name"] == name
        assert c.get("/v2/models/gamma").json()["versions"] == ["1", "2"]
        assert c.get("/v2/models/gamma/versions/1/ready").status_code == 200
        assert c.get("/v2/models/broken/ready").status_code == 503
        r = _classify(c, "broken")
        assert r.status_code in (400, 503) and "not a valid ONNX" in r.json()["error"]
        assert c.get("/v2/models/nope/ready").status_code == 404
        assert c.get("/v2/health/live").status_code == 200 and c.get("/v2/health/ready").status_code == 200
        metrics = c.get("/metrics").text
        for name in ("alpha", "beta", "gamma"):
            assert f'nv_inference_request_success{{model="{name}",version="' in metrics, name
        g = grpcclient.InferenceServerClient(s.line.split("gRPC at ")[1].split()[0])
        index = {(m.name, m.version): m.state for m in g.get_model_repository_index().models}
        assert index[("alpha", "1")] == "READY" and index[("broken", "1")] == "UNAVAILABLE"
        assert g.is_model_ready("beta") and not g.is_model_ready("broken")
        g.unload_model("beta")
        assert not g.is_model_ready("beta") and _classify(c, "beta").status_code == 400
        g.load_model("beta")
        assert g.is_model_ready("beta") and _classify(c, "beta").status_code == 200
        g.close()


def test_lru_unloading_and_explicit_unload_reload_under_load(repo):
    with running(repo, "--max-models-loaded", "2") as s, httpx.Client(base_url=s.url, timeout=60) as c:
        statuses: list[int] = []
        stop = threading.Event()

        def hammer() -> None:  # steady load on alpha the whole time
            with httpx.Client(base_url=s.url, timeout=60) as h:
                while not stop.is_set() and len(statuses) < 2000:
                    statuses.append(_classify(h, "alpha").status_code)

        t = threading.Thread(target=hammer, daemon=True)
        t.start()
        try:
            time.sleep(0.3)
            st = _states(c)
            assert st[("alpha", "1")][0] == "READY" and st[("beta", "1")][0] == "READY"
            assert st[("gamma", "2")] == ("UNAVAILABLE", "not loaded")  # the bound: 2 models
            assert _classify(c, "gamma").status_code == 200  # loaded on demand; beta (least recently used) goes
            st = _states(c)
            assert st[("gamma", "2")][0] == "READY" and st[("beta", "1")] == ("UNAVAILABLE", "not loaded")
            assert st[("alpha", "1")][0] == "READY"  # in use: never the one unloaded
            assert _classify(c, "beta").status_code == 200  # back on demand; gamma goes now
            assert _states(c)[("gamma", "2")][0] == "UNAVAILABLE"
            before = len(statuses)
            assert c.post("/v2/repository/models/alpha/unload").status_code == 200
            r = _classify(c, "alpha")
            assert r.status_code == 400 and "/v2/repository/models/alpha/load" in r.json()["error"]
            assert c.post("/v2/repository/models/alpha/load").status_code == 200
            time.sleep(0.3)
            assert _classify(c, "alpha").status_code == 200
        finally:
            stop.set()
            t.join(60)
        assert len(statuses) > before + 5 and statuses[-1] == 200
        assert set(statuses) <= {200, 400, 503}, set(statuses)  # no 500, no dropped connection, while it unloaded
        assert s.proc.poll() is None


def test_the_repository_extension_needs_the_key(repo, tmp_path):
    kf = tmp_path / "key.txt"
    kf.write_text(KEY)
    kf.chmod(0o600)
    with running(repo, "--api-key-file", str(kf)) as s, httpx.Client(base_url=s.url) as c:
        assert c.post("/v2/repository/index").status_code == 401
        assert c.post("/v2/repository/models/alpha/unload").status_code == 401
        assert _states(c, {"authorization": f"Bearer {KEY}"})[("alpha", "1")][0] == "READY"
