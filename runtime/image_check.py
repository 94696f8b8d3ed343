"""The one pre-decode check for every image edgeproof reads (`run`, training data, calibration).

Runs on the file's bytes before OpenCV sees them, and is cheap: a stat, one read, a sniff of the
magic bytes, a walk over the header segments, and a look at the end of the file. It catches what a
decoder either crashes on, allocates gigabytes for, or silently "decodes":

- a directory, a missing or unreadable path, a zero-byte file, something that is not an image at all;
- a truncated JPEG (OpenCV returns it with a grey bottom half and only logs a warning) or PNG;
- a decompression bomb: the width x height the header declares (PNG, JPEG, GIF, BMP, WebP, TIFF,
  PNM, JPEG 2000, Radiance HDR, Sun raster, AVIF) is checked against a pixel limit before any pixel
  buffer exists. The limit is an argument of each check (`limit`, e.g. `edgeproof run
  --max-image-pixels`), else EDGEPROOF_MAX_IMAGE_PIXELS (default 100 MP, `100M`/`1e8` forms
  accepted); no per-run limit is kept in process state. OpenCV's own OPENCV_IO_MAX_IMAGE_PIXELS is
  set once, when this module is imported before cv2, to the environment's limit as a backstop for
  the formats whose header is not read here (a user's own setting wins).

Reasons are short and stable strings: summaries and metrics.json count skipped files by reason.
"""

from __future__ import annotations

import os
import re
import stat
import struct
import sys
import zlib
from pathlib import Path

from edgeproof.errors import UsageError

ENV = "EDGEPROOF_MAX_IMAGE_PIXELS"
CV_ENV = "OPENCV_IO_MAX_IMAGE_PIXELS"
DEFAULT_MAX_PIXELS = 100_000_000
BYTES_PER_PIXEL_LIMIT = 8  # files above max_pixels * 8 bytes (+1 MiB) are refused before reading

ZERO_BYTE = "zero-byte file"
IS_DIR = "is a directory"
NOT_FOUND = "not found"
BROKEN_LINK = "broken symlink (its target is missing)"
DENIED = "permission denied"
NOT_REGULAR = "not a regular file"
TEXT = "not an image (looks like text)"
VIDEO = "not an image (looks like a video)"
UNKNOWN = "not an image (unknown format)"
TRUNC_JPEG = "truncated JPEG"
TRUNC_PNG = "truncated PNG"
TRUNCATED = "truncated image"
CORRUPT = "corrupt image"
OPENCV_TOO_LARGE = "image too large (over OPENCV_IO_MAX_IMAGE_PIXELS)"
VIDEO_UNOPENED = "cannot open video (unsupported codec or corrupt file)"
VIDEO_EMPTY = "video has no frames"
FLOAT_TIFF = "unsupported image format (1-channel floating-point TIFF)"


class ImageReadError(Exception):
    """A file that is not a readable image; str() is the short, stable reason (zero-byte file, ...)."""


# ---------------------------------------------------------------- the pixel limit

_env_cache: tuple[str | None, int] | None = None
_backstop_ours = False


def parse_pixels(text: str | int) -> int:
    """'100000000', '100M', '100MP', '1e8', '64 MP' -> pixels; ValueError when it is none of them."""
    s = str(text).strip().upper().replace(" ", "").removesuffix("P")
    mult = 1_000_000 if s.endswith("M") else 1
    value = float(s.removesuffix("M")) * mult
    if not value >= 1 or value != value or value == float("inf"):
        raise ValueError(text)
    return int(value)


def max_pixels(limit: int | None = None) -> int:
    """The pixel limit of a check: `limit` when given, else EDGEPROOF_MAX_IMAGE_PIXELS, else 100 MP."""
    global _env_cache
    if limit is not None:
        return limit
    raw = os.environ.get(ENV)
    if _env_cache is None or _env_cache[0] != raw:
        try:
            _env_cache = (raw, DEFAULT_MAX_PIXELS if raw in (None, "") else parse_pixels(raw))
        except ValueError:
            raise UsageError(f"{ENV}='{raw}' is not a pixel count; give e.g. 100000000 or 100M "
                             "(the largest width x height accepted)") from None
    return _env_cache[1]


def set_opencv_backstop(limit: int | None = None) -> None:
    """OpenCV reads OPENCV_IO_MAX_IMAGE_PIXELS once, when cv2 loads: set it before that, never over a user's.

    Process-wide by nature: called at import with the environment's limit, and by the CLI (which owns
    its process) with --max-image-pixels before cv2 loads."""
    global _backstop_ours
    if "cv2" in sys.modules or (CV_ENV in os.environ and not _backstop_ours):
        return
    try:
        os.environ[CV_ENV] = str(max_pixels(limit))
        _backstop_ours = True
    except UsageError:  # a bad EDGEPROOF_MAX_IMAGE_PIXELS is reported when the limit is used
        pass


set_opencv_backstop()


def _mp(pixels: int) -> str:
    return f"{pixels / 1e6:g} MP"


# ---------------------------------------------------------------- reading

def _open_nonblocking(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NONBLOCK)


def read_bytes(path: str | Path, limit: int | None = None) -> bytes:
    """The file's bytes, or ImageReadError: not found, is a directory, permission denied, zero-byte, too large."""
    try:
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode):
            raise ImageReadError(IS_DIR)
        if not stat.S_ISREG(st.st_mode):  # a FIFO or device would block or never end
            raise ImageReadError(NOT_REGULAR)
        if st.st_size == 0:
            raise ImageReadError(ZERO_BYTE)
        pixels = max_pixels(limit)
        most = pixels * BYTES_PER_PIXEL_LIMIT + 2**20
        if st.st_size > most:
            raise ImageReadError(f"file too large (over {most // 2**20} MiB for the {_mp(pixels)} limit)")
        # O_NONBLOCK, then fstat: a path swapped for a FIFO after the stat above must not block the read
        with open(path, "rb", opener=_open_nonblocking) as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise ImageReadError(NOT_REGULAR)
            data = f.read()
    except FileNotFoundError:
        raise ImageReadError(BROKEN_LINK if os.path.islink(path) else NOT_FOUND) from None
    except IsADirectoryError:
        raise ImageReadError(IS_DIR) from None
    except PermissionError:
        raise ImageReadError(DENIED) from None
    except OSError as exc:
        raise ImageReadError(f"unreadable ({exc.strerror or type(exc).__name__})") from None
    if not data:
        raise ImageReadError(ZERO_BYTE)
    return data


# ---------------------------------------------------------------- header parsing

def _u16be(d: bytes, o: int) -> int:
    return struct.unpack_from(">H", d, o)[0]


def _u32be(d: bytes, o: int) -> int:
    return struct.unpack_from(">I", d, o)[0]


def _u16le(d: bytes, o: int) -> int:
    return struct.unpack_from("<H", d, o)[0]


def _u32le(d: bytes, o: int) -> int:
    return struct.unpack_from("<I", d, o)[0]


_PNG_SIG = b"\x89PNG\r\n\x1a\n"
_PNG_CRITICAL = {b"IHDR", b"PLTE", b"IDAT", b"IEND"}
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _png(d: bytes) -> tuple[int, int]:
    """Walk the chunks: cut off (TRUNC_PNG), or a critical chunk whose CRC does not match (libpng would
    give up on it, printing 'libpng error: IDAT: CRC error' on stderr; ancillary chunks it only drops)."""
    if len(d) < 33 or d[12:16] != b"IHDR":
        raise ImageReadError(TRUNC_PNG if len(d) < 33 else CORRUPT)
    size = _u32be(d, 16), _u32be(d, 20)
    view, pos, n = memoryview(d), 8, len(d)
    while True:  # trailing bytes after IEND are legal
        if pos + 12 > n:
            raise ImageReadError(TRUNC_PNG)
        end = pos + 12 + _u32be(d, pos)
        if end > n:
            raise ImageReadError(TRUNC_PNG)  # a chunk longer than what is left: cut off
        kind = d[pos + 4:pos + 8]
        if kind in _PNG_CRITICAL and zlib.crc32(view[pos + 4:end - 4]) != _u32be(d, end - 4):
            raise ImageReadError(CORRUPT)
        if kind == b"IEND":
            return size
        pos = end


def _rx(pattern: bytes) -> re.Pattern[bytes]:
    """The compiled pattern (re's own cache keeps it): compiled the first time a file needs it, not at import."""
    return re.compile(pattern)


# A marker inside or after entropy-coded data: 0xFF followed by anything but a stuffed 0x00, a restart
# marker (RST0-7) or another 0xFF (fill).
_MARKER = rb"\xff[^\x00\xd0-\xd7\xff]"
# Segments that may sit between the scans of one image (progressive/multi-scan JPEG).
_BETWEEN_SCANS = {0xC4, 0xCC, 0xDA, 0xDB, 0xDC, 0xDD, 0xFE} | set(range(0xE0, 0xF0))


def _jpeg(d: bytes) -> tuple[int, int]:
    """Walk the marker segments up to the first scan for the frame size, then make sure the image ends."""
    pos, n, size = 2, len(d), None
    while True:
        while pos < n and d[pos] == 0xFF and pos + 1 < n and d[pos + 1] == 0xFF:
            pos += 1  # fill bytes
        if pos + 4 > n:
            raise ImageReadError(TRUNC_JPEG)
        if d[pos] != 0xFF:
            raise ImageReadError(CORRUPT)
        marker = d[pos + 1]
        if 0xD0 <= marker <= 0xD8 or marker == 0x01:  # standalone markers
            pos += 2
            continue
        length = _u16be(d, pos + 2)
        if marker in _SOF:
            if pos + 9 > n:
                raise ImageReadError(TRUNC_JPEG)
            size = _u16be(d, pos + 7), _u16be(d, pos + 5)
        if marker == 0xDA:
            break
        if marker == 0xD9 or length < 2:
            raise ImageReadError(CORRUPT)  # an end (or a broken segment) before any scan
        pos += 2 + length
    if size is None:
        raise ImageReadError(CORRUPT)
    if not d.endswith(b"\xff\xd9") and not _jpeg_ends(d, pos):
        raise ImageReadError(TRUNC_JPEG)
    return size


def _jpeg_ends(d: bytes, pos: int) -> bool:
    """Whether the image whose first scan starts at `pos` has its end-of-image marker.

    Followed marker by marker (segment lengths are skipped, so their payloads never count), because
    what comes after the end is legal and may be anything: a Motion Photo's MP4, a camera maker's
    trailer, another JPEG. Only for files that do not simply end with the marker (the common case)."""
    marker_at = _rx(_MARKER).search
    while (m := marker_at(d, pos)) is not None:
        pos, marker = m.start(), d[m.start() + 1]
        if marker == 0xD9:
            return True
        if marker not in _BETWEEN_SCANS:  # damage inside the scan data: the decoder resyncs, so do we
            pos += 2
            continue
        if pos + 4 > len(d):
            return False
        pos += 2 + max(2, _u16be(d, pos + 2))
    return False


def _bmp(d: bytes) -> tuple[int, int]:
    if len(d) < 26:
        raise ImageReadError(TRUNCATED)
    if _u32le(d, 14) == 12:  # OS/2 BITMAPCOREHEADER
        return _u16le(d, 18), _u16le(d, 20)
    w, h = struct.unpack_from("<ii", d, 18)
    return abs(w), abs(h)


def _webp(d: bytes) -> tuple[int, int] | None:
    if len(d) < 30 or _u32le(d, 4) + 8 > len(d):
        raise ImageReadError(TRUNCATED)
    kind = d[12:16]
    if kind == b"VP8X":
        return 1 + int.from_bytes(d[24:27], "little"), 1 + int.from_bytes(d[27:30], "little")
    if kind == b"VP8L":
        bits = _u32le(d, 21)
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    if kind == b"VP8 ":
        return _u16le(d, 26) & 0x3FFF, _u16le(d, 28) & 0x3FFF
    return None


def _tiff(d: bytes) -> tuple[int, int] | None:
    e = "<" if d[:2] == b"II" else ">"
    try:
        ifd = struct.unpack_from(e + "I", d, 4)[0]
        count = struct.unpack_from(e + "H", d, ifd)[0]
        dims = {}
        for i in range(min(count, 256)):
            tag, typ = struct.unpack_from(e + "HH", d, ifd + 2 + 12 * i)
            if tag in (256, 257, 277, 339):  # width, height, samples per pixel, sample format
                fmt = e + ("H" if typ == 3 else "I")
                dims[tag] = struct.unpack_from(fmt, d, ifd + 2 + 12 * i + 8)[0]
    except struct.error:
        raise ImageReadError(TRUNCATED) from None
    if dims.get(339) == 3 and dims.get(277, 1) == 1:  # OpenCV fails on these with an [ERROR] line
        raise ImageReadError(FLOAT_TIFF)
    return (dims[256], dims[257]) if 256 in dims and 257 in dims else None


# Header patterns, compiled on first use (_rx): a run that meets no such file does not pay for them.
_PNM = rb"P[1-6](?:\s|#[^\n]*\n)+(\d+)(?:\s|#[^\n]*\n)+(\d+)"
_PAM_W, _PAM_H = rb"\nWIDTH\s+(\d+)", rb"\nHEIGHT\s+(\d+)"
_PFM = rb"P[Ff]\s+(\d+)\s+(\d+)"
_HDR = rb"\n[-+]Y (\d+) [-+]X (\d+)"


def _pnm(d: bytes) -> tuple[int, int] | None:
    head = d[:1024]
    if head[:2] == b"P7":
        w, h = _rx(_PAM_W).search(head), _rx(_PAM_H).search(head)
        return (int(w[1]), int(h[1])) if w and h else None
    m = _rx(_PFM if head[1:2] in b"Ff" else _PNM).match(head)
    return (int(m[1]), int(m[2])) if m else None


def _box(d: bytes, name: bytes, fmt: str, off: int, limit: int = 4096) -> tuple[int, int] | None:
    i = d.find(name, 0, limit)
    if i < 0 or i + off + struct.calcsize(fmt) > len(d):
        return None
    a, b = struct.unpack_from(fmt, d, i + off)
    return a, b


# (magic at offset 0, format name, size reader -> (width, height) or None when not read)
_FORMATS = [
    (_PNG_SIG, "PNG", _png),
    (b"\xff\xd8\xff", "JPEG", _jpeg),
    (b"GIF87a", "GIF", lambda d: (_u16le(d, 6), _u16le(d, 8)) if len(d) >= 10 else None),
    (b"GIF89a", "GIF", lambda d: (_u16le(d, 6), _u16le(d, 8)) if len(d) >= 10 else None),
    (b"BM", "BMP", _bmp),
    (b"II*\x00", "TIFF", _tiff),
    (b"MM\x00*", "TIFF", _tiff),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000",  # jp2h/ihdr box: height, width
     lambda d: (lambda hw: hw and (hw[1], hw[0]))(_box(d, b"ihdr", ">II", 4))),
    (b"\xff\x4f\xff\x51", "JPEG 2000", lambda d: (_u32be(d, 8), _u32be(d, 12)) if len(d) >= 16 else None),
    (b"v/1\x01", "OpenEXR", lambda d: None),
    (b"#?RADIANCE", "Radiance HDR", lambda d: (lambda m: m and (int(m[2]), int(m[1])))(_rx(_HDR).search(d[:4096]))),
    (b"#?RGBE", "Radiance HDR", lambda d: (lambda m: m and (int(m[2]), int(m[1])))(_rx(_HDR).search(d[:4096]))),
    (b"\x59\xa6\x6a\x95", "Sun raster", lambda d: (_u32be(d, 4), _u32be(d, 8)) if len(d) >= 12 else None),
] + [(b"P" + bytes([c]), "PNM", _pnm) for c in b"1234567Ff"]

_ISO_IMAGE_BRANDS = (b"avif", b"avis", b"mif1", b"msf1", b"heic", b"heix")


def _sniff_other(d: bytes) -> str:
    """The reason for bytes that match no image signature."""
    if d[4:8] == b"ftyp" or d[:4] in (b"\x1aE\xdf\xa3", b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3") or \
            (d[:4] == b"RIFF" and d[8:12] == b"AVI ") or d[:3] == b"FLV":
        return VIDEO
    sample = d[:512].removeprefix(b"\xef\xbb\xbf")
    if b"\x00" not in sample:
        try:
            text = sample.decode("utf-8")
        except UnicodeDecodeError as exc:  # a multi-byte character cut at the sample's end is still text
            text = sample[:exc.start].decode("utf-8") if exc.start >= len(sample) - 3 else ""
        if text and all(c.isprintable() or c in "\t\n\r\f\v" for c in text):
            return TEXT
    return UNKNOWN


def image_size(data: bytes) -> tuple[str, tuple[int, int] | None]:
    """(format name, (width, height) or None when its header is not read here); ImageReadError when the
    bytes are not an image, or are one that is truncated or damaged in a way a decoder would hide."""
    for magic, name, reader in _FORMATS:
        if data.startswith(magic):
            try:
                return name, reader(data)
            except struct.error:
                raise ImageReadError(TRUNCATED) from None
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP", _webp(data)
    if data[4:8] == b"ftyp" and data[8:12] in _ISO_IMAGE_BRANDS:
        return "AVIF/HEIF", _box(data, b"ispe", ">II", 8)
    raise ImageReadError(_sniff_other(data))


def check_bytes(data: bytes, limit: int | None = None) -> str:
    """Raise ImageReadError (the reason) unless `data` looks like a whole image within the pixel limit
    (`limit`, else the environment's); return the format name."""
    if not data:
        raise ImageReadError(ZERO_BYTE)
    name, size = image_size(data)
    if size is not None:
        pixels = max_pixels(limit)
        if size[0] * size[1] > pixels:
            raise ImageReadError(f"image too large (over the {_mp(pixels)} limit)")
    return name


def check_file(path: str | Path, limit: int | None = None) -> bytes:
    """read_bytes + check_bytes: the bytes of a file that passed the check, ready for the decoder."""
    data = read_bytes(path, limit)
    check_bytes(data, limit)
    return data
