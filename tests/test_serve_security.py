"""Safe defaults: loopback bind, API key rules, bearer auth, CORS off unless asked, the key in no output."""

from __future__ import annotations

import subprocess

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("starlette", reason="needs edgeproof[serve]")
pytest.importorskip("onnx", reason="the test models are built with onnx")

from _serve_helpers import KEY, colour_model, png_bytes, running

from edgeproof.errors import UsageError
from edgeproof.serve.config import ServeConfig, is_loopback, parse_bytes


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return colour_model(tmp_path_factory.mktemp("serve-sec") / "colour.onnx")


@pytest.fixture(scope="module")
def key_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("key") / "key.txt"
    p.write_text(KEY + "\n")
    return p


def _classify(c, headers=None):
    return c.post("/v1/classify", content=png_bytes((200, 10, 10)), headers={"content-type": "image/png",
                                                                             **(headers or {})})


def test_with_a_key_every_api_call_needs_the_bearer_token(model, key_file):
    with running(model, "--api-key-file", str(key_file), "--access-log") as s:
        with httpx.Client(base_url=s.url) as c:
            for headers in ({}, {"authorization": "Bearer wrong-key-0123456789"}, {"authorization": KEY},
                            {"authorization": f"Basic {KEY}"}, {"authorization": f"Bearer {KEY}x"}):
                r = _classify(c, headers)
                assert r.status_code == 401 and r.json() == {"error": "unauthorized"}
                assert r.headers["www-authenticate"] == "Bearer"
            good = {"authorization": f"Bearer {KEY}"}
            assert _classify(c, good).json()["top_k"][0]["label"] == "red"
            for path in ("/v1/model", "/metrics", "/v2", "/v2/models/colour"):
                assert c.get(path).status_code == 401, path
                assert c.get(path, headers=good).status_code == 200, path
            for path in ("/", "/static/app.js", "/v2/health/live", "/v2/health/ready"):  # page and probes
                assert c.get(path).status_code == 200, path
        assert "bearer key required" in s.line
        code, out, err = s.stop()
    assert code == 0
    assert KEY not in out and KEY not in err  # not in the start line, the access log or anywhere


def test_the_key_can_come_from_the_environment(model):
    with running(model, env={"EDGEPROOF_API_KEY": KEY}) as s, httpx.Client(base_url=s.url) as c:
        assert _classify(c).status_code == 401
        assert _classify(c, {"authorization": f"Bearer {KEY}"}).status_code == 200


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10"])
def test_a_non_loopback_host_without_a_key_is_refused_before_binding(model, host):
    import os
    import sys

    env = {k: v for k, v in os.environ.items() if k != "EDGEPROOF_API_KEY"}
    out = subprocess.run([sys.executable, "-m", "edgeproof", "serve", str(model), "--host", host, "--port", "0"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 2, out
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert "--api-key-file" in out.stderr and "--insecure-no-auth" in out.stderr and "EDGEPROOF_API_KEY" in out.stderr
    assert "serving" not in out.stdout


@pytest.mark.parametrize("content", ["short", "has a space in it 0123456789", ""])
def test_a_weak_or_empty_key_is_refused(model, tmp_path, content):
    import sys

    kf = tmp_path / "k.txt"
    kf.write_text(content)
    out = subprocess.run([sys.executable, "-m", "edgeproof", "serve", str(model), "--api-key-file", str(kf)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "API key" in out.stderr and "secrets.token_urlsafe" in out.stderr
    if content:
        assert content not in out.stderr  # the key is never echoed, not even a bad one


def test_config_rules():
    assert ServeConfig().host == "127.0.0.1" and not ServeConfig().auth and ServeConfig().cors == []
    ServeConfig(host="0.0.0.0", insecure_no_auth=True)  # said out loud: allowed
    ServeConfig(host="0.0.0.0", api_key=KEY)
    with pytest.raises(UsageError, match="no API key"):
        ServeConfig(host="0.0.0.0")
    with pytest.raises(UsageError, match="--cors"):
        ServeConfig(cors=["example.com"])
    with pytest.raises(UsageError, match="--max-batch"):
        ServeConfig(max_batch=0)
    assert KEY not in repr(ServeConfig(api_key=KEY))


def test_loopback_and_sizes():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.8.0.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("192.168.1.20")
    assert parse_bytes("8M") == 8 * 2**20 and parse_bytes("512k") == 512 * 1024 and parse_bytes("1000") == 1000
    for bad in ("lots", "-1M", "1X", "nanM"):
        with pytest.raises(ValueError):
            parse_bytes(bad)


def _preflight(c):
    return c.options("/v1/classify", headers={"origin": "https://app.example.com",
                                              "access-control-request-method": "POST",
                                              "access-control-request-headers": "authorization"})


def test_cors_is_off_by_default(model):
    with running(model) as s, httpx.Client(base_url=s.url) as c:
        assert "access-control-allow-origin" not in _preflight(c).headers
        # a page elsewhere can send a CORS-simple POST without a preflight: refused, naming the way to allow it
        r = _classify(c, {"origin": "https://app.example.com"})
        assert r.status_code == 403 and "access-control-allow-origin" not in r.headers
        assert "--cors" in r.json()["error"]
        assert _classify(c, {"origin": s.url}).status_code == 200  # the server's own page
        assert _classify(c).status_code == 200  # curl and SDKs send no Origin


def test_cors_origin_when_asked(model, key_file):
    with running(model, "--cors", "https://app.example.com", "--api-key-file", str(key_file)) as s, \
            httpx.Client(base_url=s.url) as c:
        r = _preflight(c)  # a preflight carries no credentials: it must not need the key
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example.com"
        r = _classify(c, {"origin": "https://app.example.com", "authorization": f"Bearer {KEY}"})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example.com"
        r = _classify(c, {"origin": "https://evil.example.net", "authorization": f"Bearer {KEY}"})
        assert r.status_code == 403 and "access-control-allow-origin" not in r.headers
