"""Bad requests get the right 4xx with one clear reason, and the server stays up (real process, real client)."""

from __future__ import annotations

import http.client
import struct
import zlib
from urllib.parse import urlsplit

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("starlette", reason="needs edgeproof[serve]")
pytest.importorskip("onnx", reason="the test models are built with onnx")

from _serve_helpers import colour_model, jpeg_bytes, png_bytes, running


def png_declaring(width: int, height: int) -> bytes:
    """A well-formed little PNG whose header declares width x height (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    model = colour_model(tmp_path_factory.mktemp("serve-errors") / "colour.onnx")
    with running(model, "--max-body", "64K") as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def post_image(client, data: bytes, ctype: str = "image/png"):
    return client.post("/v1/classify", content=data, headers={"content-type": ctype})


GOOD = png_bytes((200, 20, 20))


@pytest.mark.parametrize("data,reason", [
    (GOOD[: len(GOOD) // 2], "truncated PNG"),
    (jpeg_bytes((10, 200, 10))[:300], "truncated JPEG"),
    (b"", "zero-byte file"),
    (b"just some text, not a picture\n", "not an image (looks like text)"),
    (bytes(range(256)) * 4, "not an image (unknown format)"),
    (png_declaring(20000, 20000), "image too large (over the 100 MP limit)"),
    (GOOD[:40] + b"\xff" * 8 + GOOD[48:], "corrupt image"),
])
def test_bad_images_are_400_with_the_reasons_run_gives(client, data, reason):
    r = post_image(client, data)
    assert r.status_code == 400, r.text
    assert r.json() == {"error": f"image: {reason}; send a whole JPEG, PNG, WebP, BMP or TIFF image"}


def test_a_bad_image_among_good_ones_names_which(client):
    files = [("image", ("ok.png", GOOD, "image/png")), ("image", ("cut.png", GOOD[:50], "image/png"))]
    r = client.post("/v1/classify", files=files)
    assert r.status_code == 400 and r.json()["error"].startswith("image 2 ('cut.png'): truncated PNG")


@pytest.mark.parametrize("ctype", ["text/plain", "application/json", "application/x-www-form-urlencoded", None])
def test_wrong_content_type_is_415(client, ctype):
    headers = {"content-type": ctype} if ctype else {}
    r = client.post("/v1/classify", content=GOOD, headers=headers)
    assert r.status_code == 415, r.text
    assert "multipart/form-data" in r.json()["error"] and "image/jpeg" in r.json()["error"]


def test_a_body_over_max_body_is_413_by_header_and_while_streaming(client):
    r = post_image(client, b"\0" * (65 * 1024))
    assert r.status_code == 413 and "--max-body" in r.json()["error"]

    def chunks():  # no Content-Length: the limit must hold while the body streams in
        for _ in range(100):
            yield b"\0" * 4096

    r = client.post("/v1/classify", content=chunks(), headers={"content-type": "image/png"})
    assert r.status_code == 413 and "--max-body" in r.json()["error"]
    r = client.post("/v2/models/colour/infer", content=b"[" + b"0," * 40000 + b"0]")
    assert r.status_code == 413


def test_multipart_without_a_file_or_malformed_is_400(client):
    r = client.post("/v1/classify", data={"image": "not a file"}, files={})
    assert r.status_code in (400, 415)
    r = client.post("/v1/classify", data={"note": "x"}, files={"dummy": ("", b"")})
    assert r.status_code == 400
    r = client.post("/v1/classify", content=b"--xx\r\nbroken", headers={"content-type": "multipart/form-data"})
    assert r.status_code == 400 and r.json()["error"]


def test_unknown_paths_and_methods_are_json_404_405(client):
    r = client.get("/etc/passwd")
    assert r.status_code == 404 and "error" in r.json()
    r = client.get("/v1/classify")
    assert r.status_code == 405 and "error" in r.json()


def test_the_server_is_still_up_and_right_after_all_that(client):
    assert client.get("/v2/health/ready").status_code == 200
    r = post_image(client, GOOD)
    assert r.status_code == 200 and r.json()["top_k"][0]["label"] == "red"


@pytest.mark.slow
def test_ten_thousand_bad_bodies_in_a_row_leave_it_up_with_flat_memory(server):
    u = urlsplit(server.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    bodies = [(GOOD[:60], "image/png"), (b"hello", "image/jpeg"), (b"x" * 100, "text/plain"),
              (png_declaring(30000, 30000), "image/png"), (b"\0" * 70000, "image/png")]

    def send(i: int) -> int:
        nonlocal conn
        data, ctype = bodies[i % len(bodies)]
        conn.request("POST", "/v1/classify", body=data, headers={"content-type": ctype})
        resp = conn.getresponse()
        resp.read()
        if resp.getheader("connection") == "close":  # 413 closes the connection
            conn.close()
            conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
        return resp.status

    for i in range(500):  # warm-up: allocator pools, metric label sets
        send(i)
    before = server.rss_kib()
    codes = [send(i) for i in range(10_000)]
    after = server.rss_kib()
    conn.close()
    assert set(codes) == {400, 413, 415}
    print(f"RSS {before} -> {after} KiB over 10,000 bad requests")
    assert after - before < 16 * 1024, f"RSS grew {before} -> {after} KiB over 10,000 bad requests"
    with httpx.Client(base_url=server.url) as c:
        assert c.get("/v2/health/ready").status_code == 200


@pytest.mark.parametrize("header,body,needle", [
    ("999", b'{"inputs": []}', "does not fit"),
    ("x", b'{"inputs": []}', "does not fit"),
    ("105", b'{"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 9}}]}'
     b"\x05\x00\x00\x00ab", "does not fit the 6 binary bytes"),
    ("105", b'{"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 6}}]}'
     b"\x05\x00\x00\x00ab", "claims 5 bytes"),
    ("115", b'{"inputs": [{"name": "image", "shape": [1, 32, 32, 3], "datatype": "FP32", "parameters": '
     b'{"binary_data_size": 8}}]}' + b"\0" * 8, "holds 8 binary bytes"),
])
def test_bad_binary_tensor_data_is_400(client, header, body, needle):
    r = client.post("/v2/models/colour/infer", content=body, headers={"inference-header-content-length": header})
    assert r.status_code == 400, r.text
    assert needle in r.json()["error"]
