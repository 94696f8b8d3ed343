"""Start-up errors, graceful SIGTERM/SIGINT, the watchdog, workers, fixed-batch models, no TensorFlow."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("starlette", reason="needs edgeproof[serve]")
pytest.importorskip("onnx", reason="the test models are built with onnx")

from _serve_helpers import colour_model, looping_model, png_bytes, running

PNG = png_bytes((20, 20, 220))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-life")
    return {"colour": colour_model(root / "colour.onnx"), "fixed": colour_model(root / "fixed.onnx", batch=1),
            "loop": looping_model(root / "loop.onnx")}


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeproof", "serve", *args], capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_finishes_the_request_in_flight_then_exits_0(models, sig):
    with running(models["colour"]) as s:
        result, sending = {}, threading.Event()

        def slow_upload():
            def body():  # the request is still arriving when the signal comes
                for i in range(0, len(PNG), 512):
                    yield PNG[i:i + 512]
                    sending.set()
                    time.sleep(0.1)

            with httpx.Client(base_url=s.url, timeout=60) as c:
                r = c.post("/v1/classify", content=body(), headers={"content-type": "image/png"})
                result["status"], result["label"] = r.status_code, r.json()["top_k"][0]["label"]

        t = threading.Thread(target=slow_upload)
        t.start()
        assert sending.wait(30)
        time.sleep(0.2)
        code, out, err = s.stop(sig)
        t.join(30)
    assert result == {"status": 200, "label": "blue"}
    assert code == 0, err
    assert "Traceback" not in err and "stopped serving colour" in err


def test_an_inference_call_over_the_watchdog_limit_is_503_and_not_ready(models):
    # The replica's warm-up call already loops: the first request waits for it and gets the 503.
    with running(models["loop"], "--infer-timeout", "1") as s, httpx.Client(base_url=s.url, timeout=30) as c:
        t0 = time.monotonic()
        r = c.post("/v1/classify", content=PNG, headers={"content-type": "image/png"})
        assert r.status_code == 503 and "did not finish within 1 s" in r.json()["error"]
        assert time.monotonic() - t0 < 10  # never a hang
        ready = c.get("/v2/health/ready")
        assert ready.status_code == 503 and "did not finish" in ready.json()["error"]
        assert c.get("/v2/models/loop/ready").status_code == 503
        assert c.get("/v2/health/live").status_code == 200  # alive, so a supervisor can see why
        r = c.post("/v1/classify", content=PNG, headers={"content-type": "image/png"})
        assert r.status_code == 503 and "no healthy interpreter" in r.json()["error"]
        assert "edgeproof_watchdog_timeouts_total 1.0" in c.get("/metrics").text
        code, out, err = s.stop()
    assert code == 0
    assert "did not finish within 1 s" in err and "Traceback" not in err


def test_a_fixed_batch_model_is_served_one_image_per_call(models):
    with running(models["fixed"], "--max-batch", "8") as s, httpx.Client(base_url=s.url) as c:
        assert "no batching (the model has a fixed batch size)" in s.line
        card = c.get("/v1/model").json()
        assert card["serving"]["max_batch"] == 1 and card["serving"]["backend_can_batch"] is False
        r = c.post("/v1/classify", files=[("image", ("a.png", PNG, "image/png"))] * 3)
        assert r.status_code == 200 and [x["top_k"][0]["label"] for x in r.json()["results"]] == ["blue"] * 3


def test_two_workers_serve_concurrent_requests(models):
    from concurrent.futures import ThreadPoolExecutor

    with running(models["colour"], "--workers", "2", "--max-batch", "1") as s, httpx.Client(base_url=s.url) as c:
        assert "2 worker(s)" in s.line and c.get("/v1/model").json()["serving"]["workers"] == 2
        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(lambda _: c.post("/v1/classify", content=PNG,
                                                   headers={"content-type": "image/png"}).status_code, range(40)))
        assert codes == [200] * 40


def test_startup_errors_are_one_line_and_exit_2(models, tmp_path):
    out = _cli(str(tmp_path / "missing.tflite"))
    assert out.returncode == 2 and "not found" in out.stderr and "Traceback" not in out.stderr
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    out = _cli(str(tmp_path / "junk.onnx"))
    assert out.returncode == 2 and "junk.onnx" in out.stderr and "Traceback" not in out.stderr
    for flags, needle in ((["--max-body", "lots"], "--max-body"), (["--max-batch", "0"], "--max-batch"),
                          (["--batch-timeout-ms", "-1"], "--batch-timeout-ms"), (["--workers", "0"], "--workers"),
                          (["--max-image-pixels", "x"], "--max-image-pixels"), (["--name", "a/b"], "--name")):
        out = _cli(str(models["colour"]), *flags)
        assert out.returncode == 2 and needle in out.stderr and "Traceback" not in out.stderr, (flags, out.stderr)


def test_a_port_in_use_is_one_line_and_exit_2(models):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        out = _cli(str(models["colour"]), "--port", str(port))
    assert out.returncode == 2 and f"127.0.0.1:{port}" in out.stderr and "already in use" in out.stderr


def test_serving_never_imports_tensorflow(models):
    code = f"""
import os, signal, sys, threading, urllib.request
from edgeproof.serve import ServeConfig, serve

def started(s):
    def go():
        req = urllib.request.Request(s.url + "/v1/classify", data={PNG!r}, headers={{"content-type": "image/png"}})
        print(urllib.request.urlopen(req).status, flush=True)
        for path in ("/v2/models/colour", "/metrics", "/"):
            urllib.request.urlopen(s.url + path).read()
        bad = sorted(k for k in sys.modules if k.split(".")[0] in ("tensorflow", "keras", "tf2onnx"))
        print("heavy:", bad, flush=True)
        os.kill(os.getpid(), signal.SIGTERM)
    threading.Thread(target=go).start()

serve({str(models["colour"])!r}, ServeConfig(port=0), on_started=started)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "200\nheavy: []" in out.stdout


def test_without_the_serve_extra_it_says_the_pip_line(models):
    code = ("import sys; sys.modules['starlette'] = None; from edgeproof.cli.main import run_cli; "
            f"sys.exit(run_cli(['serve', {str(models['colour'])!r}]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "pip install 'edgeproof[serve]'" in out.stderr


def _with_manifest(folder, parity=None):
    import json

    from _runtime_models import color_onnx

    from edgeproof.runtime.integrity import sha256_file

    folder.mkdir(parents=True, exist_ok=True)
    path = color_onnx(folder / "model.onnx-fp32.onnx", size=32)
    entry = {"format": "onnx-fp32", "path": path.name, "status": "ok", "sha256": sha256_file(path)}
    if parity:
        entry["parity"] = parity
    (folder / "manifest.json").write_text(json.dumps({"artifacts": {"onnx-fp32": entry}}))
    return path


def test_the_manifest_sha256_is_checked_like_run_and_its_verdict_shown(tmp_path):
    path = _with_manifest(tmp_path / "out", parity={"verdict": "pass", "top1_agreement": 1.0})
    with running(path) as s, httpx.Client(base_url=s.url) as c:
        card = c.get("/v1/model").json()
        assert card["integrity"]["sha256_verified"] is True
        assert card["parity"]["verdict"] == "pass" and card["parity"]["source"] == "manifest.json"
    import onnx

    m = onnx.load(str(path))
    m.doc_string = "edited after convert"  # loads as before, other bytes
    onnx.save(m, str(path))
    out = _cli(str(path))
    assert out.returncode == 2 and "does not match its manifest" in out.stderr and "Traceback" not in out.stderr
    assert "--no-verify" in out.stderr


def test_the_parity_verdict_of_a_run_folder_names_each_backend(tmp_path):
    import json

    from edgeproof.serve.card import parity_verdict

    path = _with_manifest(tmp_path / "run" / "artifacts")
    (tmp_path / "run" / "parity").mkdir()
    (tmp_path / "run" / "parity" / "parity.json").write_text(json.dumps({"passed": False, "images": {"n": 40}, "results": [
        {"path": str(path), "backend": "onnxruntime", "metrics": {"verdict": "pass", "top1_agreement": 1.0}},
        {"path": str(path), "backend": "opencv", "metrics": {"verdict": "fail", "top1_agreement": 0.8},
         "failures": [{"message": "top-1 agreement 80.0% < 99%"}]},
        {"path": "other.tflite", "backend": "litert", "metrics": {"verdict": "pass"}}]}))
    v = parity_verdict(path)
    assert v["verdict"] == "fail" and v["source"] == "../parity/parity.json" and v["images"] == 40
    assert [(b["backend"], b["verdict"]) for b in v["backends"]] == [("onnxruntime", "pass"), ("opencv", "fail")]
    assert v["backends"][1]["failures"] == ["top-1 agreement 80.0% < 99%"]
    assert parity_verdict(tmp_path / "elsewhere.onnx") is None
