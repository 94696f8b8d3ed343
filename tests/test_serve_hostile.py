"""Hostile connections against a real `edgeproof serve` process on 127.0.0.1 (issue 28, defects 1, 2, 4, 8).

Each test reproduces what an adversarial pass did to the server and checks what a client then sees:
a 431 for a huge header with flat memory, 408 and a closed socket for a client that never finishes
its head or body, health probes still answered while 1,100 half-open connections are held at the
common 1024-fd soft limit, a 413/401 urllib can read, and JSON for a request the parser refuses.
"""

from __future__ import annotations

import json
import resource
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest
from _serve_helpers import KEY, colour_model, png_bytes, running


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return colour_model(tmp_path_factory.mktemp("hostile") / "colour.onnx")


def _addr(s) -> tuple[str, int]:
    host, port = s.url[len("http://"):].split(":")
    return host, int(port)


def _read_response(sock: socket.socket, timeout: float = 10) -> bytes:
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n\r\n" not in data or len(data) < data.find(b"\r\n\r\n") + 4 + _length(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


def _urllib(url: str, data: bytes | None = None, headers: dict | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_a_300_mib_header_is_431_with_flat_memory(model):
    with running(model) as s:
        before = s.rss_kib()
        sock = socket.create_connection(_addr(s))

        def stream() -> None:  # what the adversarial pass sent: one header line that never ends
            try:
                sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
                block = b"a" * 2**20
                for _ in range(300):
                    sock.sendall(block)
            except OSError:
                pass

        t = threading.Thread(target=stream, daemon=True)
        t.start()
        answer = _read_response(sock)
        t.join(30)
        sock.close()
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
        assert "header too large" in json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]
        assert s.rss_kib() - before < 20_000, (before, s.rss_kib())  # was +355 MB
        assert _urllib(s.url + "/v2/health/live") == (200, {"live": True})


def test_a_silent_or_dribbling_client_is_timed_out(model):
    with running(model, "--header-timeout", "1", "--body-timeout", "1") as s:
        silent = socket.create_connection(_addr(s))
        t0 = time.monotonic()
        answer = _read_response(silent)
        assert answer.startswith(b"HTTP/1.1 408 ") and time.monotonic() - t0 < 5  # was open for 95 s and more
        dribble = socket.create_connection(_addr(s))
        dribble.sendall(b"GET /v2/health/live HTTP/1.1\r\n")
        t0 = time.monotonic()
        for i in range(6):  # one header line every 0.3 s: never a whole head within the deadline
            try:
                dribble.sendall(f"X-{i}: y\r\n".encode())
            except OSError:
                break
            time.sleep(0.3)
        assert _read_response(dribble).startswith(b"HTTP/1.1 408 ") and time.monotonic() - t0 < 5
        slow_body = socket.create_connection(_addr(s))
        slow_body.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                          b"Content-Length: 1000\r\n\r\nabc")
        t0 = time.monotonic()
        answer = _read_response(slow_body)
        assert time.monotonic() - t0 < 5 and (answer == b"" or answer.startswith(b"HTTP/1.1 408 "))
        for c in (silent, dribble, slow_body):
            c.close()


def _soft_1024() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))


def test_health_is_answered_while_1100_half_open_connections_are_held(model, monkeypatch):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 2600:
        pytest.skip(f"needs a hard open-file limit of 2600+ (this machine: {hard})")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2600), hard))
    import _serve_helpers

    real_popen = _serve_helpers.subprocess.Popen
    # the server starts at the common 1024 soft limit; it must raise it itself
    monkeypatch.setattr(_serve_helpers.subprocess, "Popen",
                        lambda *a, **k: real_popen(*a, preexec_fn=_soft_1024, **k))
    held: list[socket.socket] = []
    try:
        with running(model) as s:
            line = next(ln for ln in open(f"/proc/{s.proc.pid}/limits") if ln.startswith("Max open files"))
            assert line.split()[3:5] == [str(hard), str(hard)], line  # the soft limit was raised to the hard one
            for _ in range(1100):  # each sends half a head and then nothing: a slowloris hold
                c = socket.create_connection(_addr(s))
                c.sendall(b"GET /v2/health/live HTTP/1.1\r\nX-Slow: ")
                held.append(c)
            time.sleep(1.5)  # old enough to be evicted
            t0 = time.monotonic()
            assert _urllib(s.url + "/v2/health/live") == (200, {"live": True})
            assert _urllib(s.url + "/v1/classify", png_bytes((200, 30, 30)), {"Content-Type": "image/png"})[0] == 200
            assert time.monotonic() - t0 < 10
            assert s.proc.poll() is None
    finally:
        for c in held:
            c.close()


def test_a_burst_over_the_connection_cap_gets_503(model):
    with running(model, "--max-connections", "20", "--header-timeout", "30") as s:
        held = [socket.create_connection(_addr(s)) for _ in range(20)]
        try:
            extra = socket.create_connection(_addr(s))  # nobody is stale yet (under a second): 503
            answer = _read_response(extra)
            assert answer.startswith(b"HTTP/1.1 503 ") and b"retry-after: 1" in answer.lower()
            assert "--max-connections" in json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]
            extra.close()
        finally:
            for c in held:
                c.close()


def test_urllib_sees_413_and_401_with_their_json_for_a_20_mib_body(model, tmp_path):
    body = b"\x89PNG" + b"x" * (20 * 2**20)
    with running(model) as s:  # urllib sends the whole body, then reads: it got "Connection reset by peer"
        status, answer = _urllib(s.url + "/v1/classify", body, {"Content-Type": "image/png"})
        assert status == 413 and "--max-body" in answer["error"]
        assert _urllib(s.url + "/v2/health/live")[0] == 200
    key_file = tmp_path / "key.txt"
    key_file.write_text(KEY)
    key_file.chmod(0o600)
    with running(model, "--api-key-file", str(key_file)) as s:
        for _ in range(3):
            assert _urllib(s.url + "/v1/classify", body, {"Content-Type": "image/png"}) == \
                (401, {"error": "unauthorized"})
        # every 401 counted was received: 3 and no more
        metrics = urllib.request.urlopen(urllib.request.Request(
            s.url + "/metrics", headers={"Authorization": f"Bearer {KEY}"})).read().decode()
        assert 'edgeproof_requests_total{endpoint="v1_classify",status="401"} 3.0' in metrics


def test_a_request_the_parser_refuses_gets_json(model):
    with running(model) as s:
        for head in (b"POST /v1/classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: abc\r\n\r\n",
                     b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header\r\n\r\n"):
            sock = socket.create_connection(_addr(s))
            sock.sendall(head)
            answer = _read_response(sock)
            sock.close()
            top, _, body = answer.partition(b"\r\n\r\n")
            assert top.startswith(b"HTTP/1.1 400 ") and b"content-type: application/json" in top.lower()
            assert "malformed HTTP request" in json.loads(body)["error"]  # was text/plain from the parser
