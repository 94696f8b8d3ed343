"""Request bodies -> float32 NHWC batches, with the runtime's own checks and reasons (off the event loop).

The bytes go through the same pre-decode check and OpenCV decode as `edgeproof run`
(runtime.image_check / runtime.preprocess), so a request gets the reason `run` would print:
'truncated JPEG', 'not an image (looks like text)', 'image too large (over the 100 MP limit)', ...

Memory, which `run` (one image at a time) does not need to bound but a server does:
- A JPEG at least twice the model's input on its short side is decoded at 1/2, 1/4 or 1/8 scale
  (libjpeg's DCT scaling, cv2.IMREAD_REDUCED_COLOR_*), never below the input size; its scores can
  differ slightly from `run`'s full-size decode. OpenCV has no reduced decode for PNG or the other
  codecs (it decodes them whole, then scales), so they are decoded whole.
- The pixels a decode produces are capped: by default PIXELS_PER_INPUT times the model's input
  pixels, at least MIN_DEFAULT_PIXELS (--max-image-pixels sets it); over it is a 400. The pixels
  being decoded are charged to the server's in-flight budget (503 + Retry-After when it is full).
"""

from __future__ import annotations

import base64
import binascii

import numpy as np

from edgeproof.contract import Preprocess
from edgeproof.runtime.image_check import ImageReadError

# Raw bodies: what phones, curl --data-binary and fetch() send. Anything else is a 415.
RAW_TYPES = ("image/", "application/octet-stream")
ACCEPTED = "multipart/form-data, or a raw body with Content-Type image/jpeg, image/png, image/webp, ..."


class BadImage(Exception):
    """400: `reason` is the runtime's short reason; `which` names the image in the request."""

    def __init__(self, which: str, reason: str) -> None:
        super().__init__(f"{which}: {reason}")
        self.which, self.reason = which, reason


PIXELS_PER_INPUT = 256
MIN_DEFAULT_PIXELS = 4_000_000
BYTES_PER_DECODED_PIXEL = 8  # BGR(A), or 16-bit BGR(A) before to_bgr8: what a decode is charged to the budget


def pixel_cap(pp: Preprocess, configured: int | None) -> int:
    """The most pixels one decode may produce: --max-image-pixels, else PIXELS_PER_INPUT x the input, >= 4 MP."""
    return configured or max(PIXELS_PER_INPUT * pp.height * pp.width, MIN_DEFAULT_PIXELS)


def reduction(fmt: str, size: tuple[int, int] | None, pp: Preprocess) -> int:
    """1, 2, 4 or 8: the largest JPEG scale-down that keeps the short side at least the input's long side."""
    if fmt != "JPEG" or size is None:
        return 1
    short, need = min(size), max(pp.height, pp.width)
    return next((d for d in (8, 4, 2) if short // d >= need), 1)


def _decode(data: bytes, pp: Preprocess, cap: int, budget) -> np.ndarray:
    from edgeproof.runtime.image_check import CORRUPT, OPENCV_TOO_LARGE, check_bytes, image_size
    from edgeproof.runtime.preprocess import quiet_opencv, to_bgr8, wants_alpha

    fmt = check_bytes(data)  # the environment's declared-size limit (100 MP) and every check `run` makes
    size = image_size(data)[1]
    alpha = wants_alpha(pp)  # a 4-channel model: the image's own alpha is kept (no reduced decode keeps it)
    d = 1 if alpha else reduction(fmt, size, pp)
    pixels = (size[0] // d) * (size[1] // d) if size else cap
    if pixels > cap:
        raise ImageReadError(f"image too large (over the {cap / 1e6:g} MP limit for this model)")
    cv2 = quiet_opencv()
    flags = cv2.IMREAD_UNCHANGED if alpha else {1: cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH,
                                                2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                                                8: cv2.IMREAD_REDUCED_COLOR_8}[d]
    with budget.hold(pixels * BYTES_PER_DECODED_PIXEL, "decoding this image"):
        try:
            img = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
        except cv2.error as exc:
            raise ImageReadError(OPENCV_TOO_LARGE if "CV_IO_MAX_IMAGE" in str(exc) else CORRUPT) from None
        if img is None or img.size == 0:
            raise ImageReadError(CORRUPT)
        return to_bgr8(img, alpha)


def prepare_bytes(data: bytes, pp: Preprocess, max_pixels: int | None, budget) -> np.ndarray:
    """Encoded image -> float32 HxWxC in model-input space; ImageReadError with the runtime's reason."""
    from edgeproof.runtime.preprocess import prepare

    return prepare(_decode(data, pp, pixel_cap(pp, max_pixels), budget), pp)


def prepare_all(items: list[tuple[str, bytes]], pp: Preprocess, max_pixels: int | None, budget) -> np.ndarray:
    arrays = []
    for which, data in items:
        try:
            arrays.append(prepare_bytes(data, pp, max_pixels, budget))
        except ImageReadError as exc:
            raise BadImage(which, str(exc)) from None
    # one image (the common request): a view with the batch axis, not np.stack's copy of the whole input
    return arrays[0][None] if len(arrays) == 1 else np.stack(arrays)


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def b64_image(value, index: int) -> bytes:
    """One element of an OIP BYTES tensor sent as JSON: base64 text (standard or URL-safe alphabet)."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if not isinstance(value, str):
        raise BadImage(f"element {index}", f"a BYTES element must be a base64 string; got {type(value).__name__}")
    s = value.strip()
    try:
        if "-" in s or "_" in s:
            return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
        return base64.b64decode(s + "=" * (-len(s) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise BadImage(f"element {index}", "not base64; send the encoded image (JPEG/PNG bytes) as base64 "
                                           "text") from None
