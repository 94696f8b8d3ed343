"""TLS (issue 28 item 14): --tls-cert/--tls-key serve HTTPS and gRPC over TLS, checked with httpx and
tritonclient.grpc against a certificate made here with openssl (skipped where openssl is missing)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys

import httpx
import pytest
from _serve_helpers import colour_model

if shutil.which("openssl") is None:
    pytest.skip("needs the openssl command to make a test certificate", allow_module_level=True)


def test_https_and_grpc_over_tls(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    model = colour_model(tmp_path / "colour.onnx")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("EDGEPROOF_API_KEY", None)
    proc = subprocess.Popen([sys.executable, "-m", "edgeproof", "serve", str(model), "--port", "0", "--grpc-port",
                             "0", "--tls-cert", str(cert), "--tls-key", str(key)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        line = proc.stdout.readline()
        m = re.search(r"at (https://127\.0\.0\.1:(\d+))/ and gRPC at (127\.0\.0\.1:\d+)", line)
        assert m, (line, proc.poll())
        r = httpx.get(m[1] + "/v2/health/live", verify=str(cert), timeout=30)
        assert r.status_code == 200 and r.json() == {"live": True}
        with pytest.raises(httpx.HTTPError):  # plain HTTP on the TLS port gets no answer
            httpx.get(f"http://127.0.0.1:{m[2]}/v2/health/live", timeout=5)
        import tritonclient.grpc as grpcclient

        c = grpcclient.InferenceServerClient(m[3], ssl=True, root_certificates=str(cert))
        assert c.is_server_live() and c.is_model_ready("colour")
        c.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def test_a_key_without_a_certificate_is_one_line(tmp_path):
    model = colour_model(tmp_path / "colour.onnx")
    out = subprocess.run([sys.executable, "-m", "edgeproof", "serve", str(model), "--tls-key", "/dev/null"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--tls-cert and --tls-key go together" in out.stderr and "Traceback" not in out.stderr
