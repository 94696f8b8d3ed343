"""Edge cases of the pre-decode image check (runtime/image_check.py) found in review: legal data after a
JPEG's end, damaged PNG pixel data caught before libpng prints on stderr, a path swapped for a FIFO."""

from __future__ import annotations

import os
import struct

import numpy as np
import pytest

from edgeproof.runtime import image_check
from edgeproof.runtime.preprocess import ImageReadError, read_image

cv2 = pytest.importorskip("cv2")


@pytest.mark.parametrize("progressive, restart", [(0, 0), (1, 0), (0, 2)])
def test_a_jpeg_with_anything_after_its_end_is_whole_and_a_cut_one_is_not(tmp_path, progressive, restart):
    """Data after the end-of-image marker is legal (Motion Photos append an MP4, cameras a trailer) even
    when it holds a start-of-scan marker and no end marker of its own; a cut image stays truncated."""
    img = np.random.default_rng(1).integers(0, 255, (48, 64, 3), np.uint8)
    jpg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_PROGRESSIVE, progressive,
                                     cv2.IMWRITE_JPEG_RST_INTERVAL, restart])[1].tobytes()
    mp4_tail = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8  # holds FF DA but no FF D9
    for tail in (mp4_tail, b"\xff\xda trailer", jpg[: len(jpg) // 2]):
        assert image_check.check_bytes(jpg + tail) == "JPEG"
        (tmp_path / "x.jpg").write_bytes(jpg + tail)
        assert np.array_equal(read_image(tmp_path / "x.jpg"), cv2.imdecode(np.frombuffer(jpg, np.uint8), 1))
    for cut in (*range(jpg.index(b"\xff\xda") + 20, len(jpg) - 1, 53), len(jpg) - 1):  # cut inside the scans
        for tail in (b"", b"\xff\xda trailer"):
            with pytest.raises(ImageReadError, match="^truncated JPEG$"):
                image_check.check_bytes(jpg[:cut] + tail)


def test_a_png_with_damaged_pixel_data_is_refused_before_libpng_prints_on_stderr(monkeypatch, capfd):
    """A CRC error in IDAT (a flipped byte on a bad SD card) is caught by the check: libpng never sees
    it, so no 'libpng error: IDAT: CRC error' line on fd 2; a bad CRC in an ancillary chunk (libpng only
    drops the chunk) still decodes."""
    png = cv2.imencode(".png", np.random.default_rng(2).integers(0, 255, (32, 32, 3), np.uint8))[1].tobytes()
    i = png.index(b"IDAT") + 4
    damaged = png[:i + 10] + bytes([png[i + 10] ^ 0x40]) + png[i + 11:]
    iend = png.index(b"IEND") - 4
    text = b"tEXtnote\x00hi"  # a tEXt chunk with a wrong CRC
    ancillary = png[:iend] + struct.pack(">I", len(text) - 4) + text + b"\0\0\0\0" + png[iend:]
    calls = []
    real = cv2.imdecode
    monkeypatch.setattr(cv2, "imdecode", lambda *a: calls.append(1) or real(*a))
    from edgeproof.runtime.preprocess import decode

    with pytest.raises(ImageReadError, match="^corrupt image$"):
        decode(damaged)
    assert not calls and "libpng" not in capfd.readouterr().err
    assert decode(ancillary).shape == (32, 32, 3)


def test_a_file_swapped_for_a_fifo_after_the_stat_is_not_read(tmp_path, monkeypatch):
    """The stat said 'regular file', then the path became a FIFO with no writer: a plain open() would
    block forever; the check opens without blocking and looks again."""
    import threading

    regular = tmp_path / "x.png"
    regular.write_bytes(cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    fifo = tmp_path / "swapped.png"
    os.mkfifo(fifo)
    real_stat = os.stat
    monkeypatch.setattr(image_check.os, "stat", lambda p, *a, **k: real_stat(regular if p == fifo else p, *a, **k))
    out: list = []

    def read() -> None:
        try:
            image_check.read_bytes(fifo)
        except ImageReadError as exc:
            out.append(str(exc))

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(10)
    if t.is_alive():  # unblock the reader so the test process can exit
        with open(fifo, "wb"):
            pass
        pytest.fail("read_bytes blocked on a FIFO")
    assert out == ["not a regular file"]
