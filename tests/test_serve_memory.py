"""Decode and body memory under concurrency, against a real server (issue 28, defect 3).

The adversarial pass took the server from 89 to 1,130 MB with 8 concurrent 291 KB PNGs of 9990x9990,
and to ~490 MB (where it stayed) with 40 concurrent 8 MB bodies. Now the pixel cap follows the model's
input (256x its pixels, at least 4 MP), JPEGs decode at reduced size, and bodies plus decoded pixels
in flight are bounded by --max-inflight (503 + Retry-After over it).
"""

from __future__ import annotations

import json
import struct
import threading
import time
import urllib.error
import urllib.request
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from _serve_helpers import colour_model, running


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return colour_model(tmp_path_factory.mktemp("memory") / "colour.onnx")


def big_png(width: int, height: int) -> bytes:
    """A real, whole PNG of width x height red pixels, a few KB compressed (built row by row: no big array)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + b"\xc8\x1e\x1e" * width
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def post(url: str, data: bytes, ctype: str = "image/png") -> tuple[int, dict, dict]:
    req = urllib.request.Request(url + "/v1/classify", data=data, headers={"Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read()), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), dict(e.headers)


class PeakRss:
    def __init__(self, server) -> None:
        self.server, self.peak, self._stop = server, server.rss_kib(), threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.server.rss_kib())

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join(5)


def test_huge_pngs_are_refused_by_the_model_tied_cap_with_flat_memory(model):
    png = big_png(4000, 4000)  # 16 MP: under the 100 MP default of `run`, over 256 x 32x32 (4 MP floor)
    assert len(png) < 200_000
    with running(model) as s:
        post(s.url, big_png(64, 64))  # warm up
        base = s.rss_kib()
        with PeakRss(s) as rss, ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: post(s.url, png), range(8)))
        assert all(a[0] == 400 and "limit for this model" in a[1]["error"] for a in answers), answers[0]
        assert rss.peak - base < 60_000, (base, rss.peak)  # each decode would hold 48 MB (8 at once: 1,130 MB)
        status, body, _ = post(s.url, big_png(1500, 1500))  # 2.25 MP: under the cap, decoded whole
        assert status == 200 and body["top_k"][0]["label"] == "red"


def test_a_big_jpeg_is_decoded_at_reduced_size_with_the_same_answer(model):
    import cv2

    bgr = np.zeros((3000, 4000, 3), np.uint8)
    bgr[:] = (30, 30, 200)  # red in BGR
    bgr[:, :400] = (200, 30, 30)  # a blue band: the answer must still be red, with the full-decode score
    jpeg = cv2.imencode(".jpg", bgr)[1].tobytes()  # 12 MP: over the 4 MP cap if decoded whole
    from edgeproof.runtime import load

    m = load(model)
    try:
        full = m.predict(_full_decode(jpeg, m.preprocess))[0]  # what `run` computes: a full-size decode
    finally:
        m.close()
    with running(model) as s:
        status, body, _ = post(s.url, jpeg, "image/jpeg")
    assert status == 200 and body["top_k"][0]["label"] == "red"
    assert abs(body["top_k"][0]["score"] - float(full.max())) < 0.01  # 1/8-scale DCT decode vs full decode


def _full_decode(data: bytes, pp) -> np.ndarray:
    import cv2

    from edgeproof.runtime.preprocess import prepare

    return prepare(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), pp)[None]


def test_concurrent_big_bodies_are_bounded_by_the_inflight_budget(model):
    body = b"\x89PNG\r\n\x1a\n" + bytes(7 * 2**20)  # 7 MiB, under --max-body 8M
    with running(model, "--max-inflight", "48M") as s:
        post(s.url, big_png(64, 64))
        base = s.rss_kib()
        with PeakRss(s) as rss, ThreadPoolExecutor(40) as pool:
            answers = list(pool.map(lambda _: post(s.url, body), range(40)))
        statuses = sorted(a[0] for a in answers)
        assert set(statuses) <= {400, 503} and 503 in statuses, statuses
        busy = next(a for a in answers if a[0] == 503)
        assert busy[2].get("retry-after") == "1" and "--max-inflight" in busy[1]["error"]
        assert rss.peak - base < 150_000, (base, rss.peak)  # was ~400 MB over the base, and it stayed
        time.sleep(0.5)
        assert s.rss_kib() - base < 40_000, (base, s.rss_kib())  # given back after the burst
