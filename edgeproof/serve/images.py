"""Request bodies -> float32 NHWC batches, with the runtime's own checks and reasons (off the event loop).

The bytes go through the same pre-decode check and OpenCV decode as `edgeproof run`
(runtime.image_check / runtime.preprocess), so a request gets the reason `run` would print:
'truncated JPEG', 'not an image (looks like text)', 'image too large (over the 100 MP limit)', ...
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


def prepare_bytes(data: bytes, pp: Preprocess, max_pixels: int | None = None) -> np.ndarray:
    """Encoded image -> float32 HxWx3 in model-input space; ImageReadError with the runtime's reason."""
    from edgeproof.runtime.preprocess import decode, prepare

    return prepare(decode(data, max_pixels), pp)


def prepare_all(items: list[tuple[str, bytes]], pp: Preprocess, max_pixels: int | None = None) -> np.ndarray:
    arrays = []
    for which, data in items:
        try:
            arrays.append(prepare_bytes(data, pp, max_pixels))
        except ImageReadError as exc:
            raise BadImage(which, str(exc)) from None
    return np.stack(arrays)


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
