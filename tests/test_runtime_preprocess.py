"""The runtime's image reader: EXIF orientation and every pixel format become BGR uint8 HxWx3."""

from __future__ import annotations

import numpy as np
import pytest

from edgeproof.runtime.preprocess import ImageReadError, read_image

cv2 = pytest.importorskip("cv2")
Image = pytest.importorskip("PIL.Image")


def test_exif_orientation_is_applied(tmp_path):
    """A portrait photo stored landscape with Orientation=6 (rotate 90° clockwise) reads as portrait."""
    img = np.zeros((20, 40, 3), np.uint8)
    img[:, :20] = (255, 0, 0)  # left half red (RGB)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    Image.fromarray(img).save(path, quality=95, exif=exif.tobytes())
    bgr = read_image(path)
    assert bgr.shape == (40, 20, 3)  # rotated
    assert bgr[5, 10, 2] > 200 and bgr[35, 10, 2] < 60  # the red half is now on top


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16"])
def test_every_pixel_format_becomes_bgr8(tmp_path, mode):
    path = tmp_path / f"{mode.replace(';', '')}.png"
    if mode == "P":
        im = Image.new("P", (8, 6))
        im.putpalette([10, 200, 30] + [0] * 765)
    elif mode == "I;16":
        arr = np.full((6, 8), 32896, np.uint16)  # 32896 / 257 = 128
        assert cv2.imwrite(str(path), arr)
        im = None
    else:
        im = Image.new(mode, (8, 6), {"L": 77, "RGBA": (10, 200, 30, 128)}[mode])
    if im is not None:
        im.save(path)
    bgr = read_image(path)
    assert bgr.shape == (6, 8, 3) and bgr.dtype == np.uint8
    expected = {"L": (77, 77, 77), "RGBA": (30, 200, 10), "P": (30, 200, 10), "I;16": (128, 128, 128)}[mode]
    assert tuple(int(v) for v in bgr[0, 0]) == expected


def _damaged_idat() -> bytes:
    """A PNG whose chunk structure is whole (so the pre-decode check passes) but whose pixel data is garbage."""
    png = bytearray(cv2.imencode(".png", np.full((8, 8, 3), 90, np.uint8))[1].tobytes())
    i = png.index(b"IDAT") + 4
    png[i:i + 8] = b"\xff" * 8
    return bytes(png)


@pytest.mark.parametrize("data, reason", [(b"", "zero-byte file"), (b"\x89PNG\r\n\x1a\n broken", "truncated PNG"),
                                          ("damaged", "corrupt image")])
def test_unreadable_files_raise_with_a_reason(tmp_path, data, reason):
    path = tmp_path / "x.png"
    path.write_bytes(_damaged_idat() if data == "damaged" else data)
    with pytest.raises(ImageReadError, match=reason):
        read_image(path)
