"""The pixel check for files that go to cv2.VideoCapture (videos and animated GIFs).

VideoCapture decodes a GIF's canvas and every frame into full-size buffers: a 43-byte GIF declaring
16000x16000 took 2.57 GB. So a video file gets the same header check as an image before any decoder
sees it: a GIF's logical screen and every frame's descriptor are read (the canvas a decoder allocates),
an image signature (an animated PNG or WebP named .gif/.mp4) goes through image_check, and after the
capture opens, its reported frame size is checked too (containers such as MP4 declare it up front).
"""

from __future__ import annotations

import os
import stat

from edgeproof.runtime.image_check import ImageReadError, check_bytes, max_pixels, read_bytes

_HEAD = 64 * 1024


def too_large(limit: int) -> str:
    return f"image too large (over the {limit / 1e6:g} MP limit)"


def gif_canvas(data: bytes) -> tuple[int, int]:
    """The largest (width, height) a GIF decoder must allocate: the logical screen grown by every frame
    descriptor (left + width, top + height). Stops quietly at a truncated block: what is there is checked."""
    w, h = int.from_bytes(data[6:8], "little"), int.from_bytes(data[8:10], "little")
    pos = 13
    if len(data) > 10 and data[10] & 0x80:
        pos += 3 << ((data[10] & 7) + 1)
    while pos < len(data):
        block = data[pos]
        if block == 0x3B:  # trailer
            break
        if block == 0x21:  # extension: label, then sub-blocks
            pos += 2
        elif block == 0x2C:  # image descriptor: left, top, width, height, packed
            if pos + 10 > len(data):
                break
            left, top, fw, fh = (int.from_bytes(data[pos + k:pos + k + 2], "little") for k in (1, 3, 5, 7))
            w, h = max(w, left + fw), max(h, top + fh)
            packed = data[pos + 9]
            pos += 10 + ((3 << ((packed & 7) + 1)) if packed & 0x80 else 0) + 1  # + LZW minimum code size
        else:  # not a GIF block: a damaged file, which the decoder rejects
            break
        while pos < len(data) and data[pos]:  # sub-blocks up to the terminator
            pos += data[pos] + 1
        pos += 1
    return w, h


def check_video_file(path: str, limit: int | None = None) -> None:
    """ImageReadError (the skip reason) when a video file's header declares frames over the pixel limit."""
    try:
        st = os.stat(path)
    except OSError:
        return  # VideoCapture reports what it cannot open
    if not stat.S_ISREG(st.st_mode):
        return
    with open(path, "rb") as f:
        head = f.read(_HEAD)
    if head[:6] in (b"GIF87a", b"GIF89a"):
        data = read_bytes(path, limit) if len(head) == _HEAD else head  # bounded by the limit's file size
        pixels = max_pixels(limit)
        w, h = gif_canvas(data)
        if w * h > pixels:
            raise ImageReadError(too_large(pixels))
        return
    try:
        check_bytes(head, limit)  # an image signature under a video name: its header is checked as an image
    except ImageReadError as exc:
        if str(exc).startswith("image too large"):
            raise


def check_capture_size(cap, limit: int | None = None) -> None:
    """ImageReadError when an opened capture reports a frame size over the pixel limit."""
    try:
        w, h = int(cap.get(3)), int(cap.get(4))  # CAP_PROP_FRAME_WIDTH, CAP_PROP_FRAME_HEIGHT
    except (AttributeError, TypeError, ValueError):  # an injected capture without get(): no size to check
        return
    pixels = max_pixels(limit)
    if w > 0 and h > 0 and w * h > pixels:
        raise ImageReadError(too_large(pixels))
