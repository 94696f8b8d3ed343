"""Issue 28 defects 5, 6 and 8 against a real server: DNS rebinding, the access log, and protocol details
each checked with the client a user has (urllib/httpx, tritonclient)."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from _serve_helpers import KEY, colour_model, png_bytes, running


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return colour_model(tmp_path_factory.mktemp("defects") / "colour.onnx")


@pytest.fixture(scope="module")
def key_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("key") / "key.txt"
    p.write_text(KEY + "\n")
    p.chmod(0o600)
    return p


def test_keyless_loopback_answers_only_loopback_host_names(model):
    with running(model) as s, httpx.Client(base_url=s.url) as c:
        port = s.url.rsplit(":", 1)[1]
        for host in ("evil.rebind.example", f"evil.rebind.example:{port}", "192.168.1.5", "127.0.0.1.nip.io"):
            r = c.get("/v2/health/live", headers={"host": host})
            assert r.status_code == 403 and "DNS-rebinding" in r.json()["error"], host  # was 200
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost", f"[::1]:{port}", "app.localhost"):
            assert c.get("/v2/health/live", headers={"host": host}).status_code == 200, host


def test_with_a_key_any_host_name_is_answered(model, key_file):
    with running(model, "--api-key-file", str(key_file)) as s, httpx.Client(base_url=s.url) as c:
        assert c.get("/v2/health/live", headers={"host": "device.example.lan"}).status_code == 200


def test_a_cross_origin_multipart_post_is_refused_unless_cors_names_it(model):
    files = {"image": ("p.png", png_bytes((200, 30, 30)), "image/png")}
    with running(model, "--cors", "https://ok.example") as s, httpx.Client(base_url=s.url) as c:
        r = c.post("/v1/classify", files=files, headers={"origin": "https://evil.example"})
        assert r.status_code == 403 and "--cors" in r.json()["error"]  # a CORS-simple POST: no preflight
        assert c.post("/v1/classify", files=files, headers={"origin": "null"}).status_code == 403
        r = c.post("/v1/classify", files=files, headers={"origin": "https://ok.example"})
        assert r.status_code == 200 and r.json()["top_k"][0]["label"] == "red"


def test_access_log_prints_one_escaped_line_per_request(model):
    with running(model, "--access-log") as s, httpx.Client(base_url=s.url) as c:
        c.get("/v2/health/live")
        c.get("/no/such%0d%0aFAKE 200 line%1b[31m")
        c.post("/v1/classify", content=png_bytes((30, 200, 30)), headers={"content-type": "image/png"})
        _, _, err = s.stop()
    lines = [ln for ln in err.splitlines() if '"GET ' in ln or '"POST ' in ln]
    assert any('"GET /v2/health/live HTTP/1.1" 200' in ln for ln in lines), err  # printed nothing before
    assert any('"POST /v1/classify HTTP/1.1" 200' in ln for ln in lines), err
    forged = [ln for ln in lines if "/no/such" in ln]
    assert len(forged) == 1 and "\\x0d\\x0aFAKE" in forged[0] and "\x1b" not in err and " 404 " in forged[0]
    assert not any(ln.startswith("FAKE") for ln in err.splitlines())


def test_bearer_scheme_is_case_insensitive_and_model_readiness_is_public(model, key_file):
    with running(model, "--api-key-file", str(key_file)) as s, httpx.Client(base_url=s.url) as c:
        for scheme in ("Bearer", "bearer", "BEARER"):
            assert c.get("/v1/model", headers={"authorization": f"{scheme} {KEY}"}).status_code == 200, scheme
        assert c.get("/v1/model", headers={"authorization": f"Basic {KEY}"}).status_code == 401
        assert c.get("/v1/model", headers={"authorization": f"bearer {KEY}x"}).status_code == 401
        assert c.get("/v2/models/colour").status_code == 401  # metadata needs the key
        import tritonclient.http as triton

        client = triton.InferenceServerClient(s.url[len("http://"):])
        assert client.is_model_ready("colour")  # was False: 401 without the key; readiness is public
        assert not client.is_model_ready("other")


def test_json_true_false_or_strings_in_fp32_data_is_400(model):
    good = np.full((1, 32, 32, 3), 100.0).ravel().tolist()
    with running(model) as s, httpx.Client(base_url=s.url) as c:
        def infer(data):
            return c.post("/v2/models/colour/infer", json={"inputs": [
                {"name": "image", "datatype": "FP32", "shape": [1, 32, 32, 3], "data": data}]})

        assert infer(good).status_code == 200
        for bad in ([True] * len(good), [1.5, True] + good[2:], [1, False] + good[2:], ["1"] * len(good),
                    [None] + good[1:]):
            r = infer(bad)
            assert r.status_code == 400 and "JSON numbers only" in r.json()["error"], bad[:2]  # was 200


def _serve_exit(model, *args: str, timeout: float = 30):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "edgeproof", "serve", str(model), "--port", "0", *args],
                          capture_output=True, text=True, timeout=timeout)


def test_the_key_file_must_be_a_small_regular_file(model, tmp_path):
    import os

    fifo = tmp_path / "key.fifo"
    os.mkfifo(fifo)
    big = tmp_path / "big.txt"
    big.write_text("k" * 100_000)
    for path, why in (("/dev/zero", "not a regular file"), (str(fifo), "FIFO"), (str(big), "over the")):
        out = _serve_exit(model, "--api-key-file", path, timeout=20)  # /dev/zero grew to 6.3 GB, a FIFO hung
        assert out.returncode == 2 and why in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_a_key_file_others_can_read_is_served_with_a_warning(model, tmp_path):
    kf = tmp_path / "key.txt"
    kf.write_text(KEY)
    kf.chmod(0o644)
    with running(model, "--api-key-file", str(kf)) as s, httpx.Client(base_url=s.url) as c:
        assert c.get("/v1/model", headers={"authorization": f"Bearer {KEY}"}).status_code == 200
        _, _, err = s.stop()
    assert f"chmod 600 {kf}" in err and KEY not in err
    kf.chmod(0o600)
    with running(model, "--api-key-file", str(kf)) as s:
        _, _, err = s.stop()
    assert "chmod" not in err
