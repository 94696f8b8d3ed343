"""Image decoding and preprocessing with OpenCV, driven by the artifact's Preprocess contract.

One code path for every source: files go through `read_image` (the shared pre-decode check in
`image_check`, then OpenCV), frames (already BGR uint8) go straight to `prepare`. Output is float32 HWC in
the model's input space, with the model's channel count (`to_channels`: gray by ITU-R BT.601 luma, color
from gray, alpha dropped or kept; see edgeproof.contract); the backend lays it out as NCHW and quantizes it
when the model needs that.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeproof.contract import Preprocess
from edgeproof.runtime.image_check import (  # importing it sets OpenCV's pixel-limit backstop
    CORRUPT,
    OPENCV_TOO_LARGE,
    ImageReadError,
    check_bytes,
    check_file,
)

__all__ = ["ImageReadError", "decode", "load_batch", "load_image", "pixels", "prepare", "read_image", "to_bgr8", "to_channels",
           "wants_alpha"]
_INTERP = {"bilinear": 1, "nearest": 0, "bicubic": 2, "area": 3}  # cv2.INTER_* values


_cv2_quiet = False


def quiet_opencv():
    """cv2, with its own WARN log lines (libpng/libjpeg on a damaged file, a missing camera) turned off
    once per process: they only duplicate the one clear reason or error edgeproof reports."""
    import cv2

    global _cv2_quiet
    if not _cv2_quiet:
        try:
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        except AttributeError:  # pragma: no cover - older OpenCV builds
            pass
        _cv2_quiet = True
    return cv2


def wants_alpha(pp: Preprocess) -> bool:
    """True when the model takes color + alpha (4 channels): decode keeps an image's own alpha for it."""
    return pp.channels == 4


def decode(data: bytes | np.ndarray, max_pixels: int | None = None, alpha: bool = False) -> np.ndarray:
    """Encoded image bytes -> BGR uint8 HxWx3 (BGRA HxWx4 with `alpha` when the image has one), or
    ImageReadError saying why (the shared check runs first, with `max_pixels` or the environment's limit)."""
    data = data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
    check_bytes(data, max_pixels)
    return _decode_checked(data, alpha)


def _decode_checked(data: bytes, alpha: bool = False) -> np.ndarray:
    cv2 = quiet_opencv()
    # IMREAD_COLOR applies EXIF orientation and expands gray/palette; ANYDEPTH keeps 16-bit precision.
    # IMREAD_UNCHANGED (for a 4-channel model) keeps the alpha channel but applies no EXIF orientation.
    flags = cv2.IMREAD_UNCHANGED if alpha else cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error as exc:  # OpenCV's own size limit (the backstop), or a decoder that gave up loudly
        raise ImageReadError(OPENCV_TOO_LARGE if "CV_IO_MAX_IMAGE" in str(exc) else CORRUPT) from None
    if img is None or img.size == 0:
        raise ImageReadError(CORRUPT)
    return to_bgr8(img, alpha)


def read_image(path: str | Path, max_pixels: int | None = None, alpha: bool = False) -> np.ndarray:
    """Decode any image file to BGR uint8 HxWx3: EXIF orientation applied; gray, RGBA, palette, 16-bit converted.
    With `alpha` (see wants_alpha) an image with an alpha channel decodes to BGRA HxWx4.

    ImageReadError (short reason) for anything the pre-decode check refuses (more than `max_pixels`, else
    the environment's limit) or OpenCV cannot decode."""
    return _decode_checked(check_file(path, max_pixels), alpha)


def to_bgr8(img: np.ndarray, alpha: bool = False) -> np.ndarray:
    """Any decoded array (gray, BGRA, 16-bit, float) -> BGR uint8 HxWx3 (a BGRA one stays HxWx4 with `alpha`)."""
    import cv2

    if img.dtype == np.uint16:
        img = (img / 257.0 + 0.5).astype(np.uint8)
    elif img.dtype in (np.float32, np.float64):
        img = np.clip(img * (255.0 if img.max() <= 1.0 else 1.0) + 0.5, 0, 255).astype(np.uint8)
    elif img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    elif img.shape[2] == 4 and not alpha:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    elif img.shape[2] == 1:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    return img


def prepare(bgr: np.ndarray, pp: Preprocess) -> np.ndarray:
    """BGR (or BGRA) uint8 HxWx3 -> float32 HxWxC in the contract's size, channels, color order and
    normalization."""
    return normalize(pixels(bgr, pp).astype(np.float32), pp)


def pixels(bgr: np.ndarray, pp: Preprocess) -> np.ndarray:
    """BGR (or BGRA) uint8 HxWx3 -> uint8 HxWxC in the contract's size, channels and color order: prepare()
    before its normalization, what Model.predict_pixels takes (a quantized model may need no float step)."""
    import cv2

    if bgr.shape[0] != pp.height or bgr.shape[1] != pp.width:
        bgr = cv2.resize(bgr, (pp.width, pp.height), interpolation=_INTERP[pp.interpolation])
    return to_channels(bgr, pp)


def to_channels(bgr: np.ndarray, pp: Preprocess) -> np.ndarray:
    """BGR / BGRA uint8 (or gray HxW) -> HxWxC uint8 as the model takes it (edgeproof.contract's table):
    1: BT.601 luma (cv2.COLOR_BGR2GRAY: 0.299 R + 0.587 G + 0.114 B), 3: color, 4: color + alpha (255 when the
    image has none), in `pp.color` order."""
    import cv2

    from edgeproof.errors import UsageError

    c = pp.channels
    if bgr.ndim == 2:
        bgr = bgr[:, :, None]
    have = bgr.shape[2]
    if c == 1:
        if have == 1:
            return bgr
        return cv2.cvtColor(bgr, cv2.COLOR_BGRA2GRAY if have == 4 else cv2.COLOR_BGR2GRAY)[:, :, None]
    if c == 3:
        code = {1: cv2.COLOR_GRAY2RGB, 4: cv2.COLOR_BGRA2RGB}.get(have, cv2.COLOR_BGR2RGB) if pp.color == "RGB" \
            else {1: cv2.COLOR_GRAY2BGR, 4: cv2.COLOR_BGRA2BGR}.get(have)
        return bgr if code is None else cv2.cvtColor(bgr, code)
    if c == 4:
        code = {1: cv2.COLOR_GRAY2RGBA, 3: cv2.COLOR_BGR2RGBA, 4: cv2.COLOR_BGRA2RGBA}[have] if pp.color == "RGB" \
            else {1: cv2.COLOR_GRAY2BGRA, 3: cv2.COLOR_BGR2BGRA}.get(have)
        return bgr if code is None else cv2.cvtColor(bgr, code)
    raise UsageError(f"the model takes {c}-channel input; image files and camera frames hold 1, 3 or 4 channels "
                     f"(gray, color, color + alpha), so feed it (N, H, W, {c}) float32 arrays through Model.predict")


def normalize(x: np.ndarray, pp: Preprocess) -> np.ndarray:
    """float32 pixels already in the contract's size and colour order -> (x * scale - mean) / std.

    Scales `x` in place (callers pass a fresh array)."""
    if pp.scale != 1.0:
        x *= np.float32(pp.scale)
    if any(pp.mean) or any(s != 1.0 for s in pp.std):
        x = (x - np.asarray(pp.mean, np.float32)) / np.asarray(pp.std, np.float32)
    return x


def load_image(path: str | Path, pp: Preprocess, max_pixels: int | None = None) -> np.ndarray:
    """read_image + prepare: float32 HxWxC ready for Model.predict (after stacking)."""
    return prepare(read_image(path, max_pixels, wants_alpha(pp)), pp)


def load_batch(paths, pp: Preprocess, max_pixels: int | None = None) -> tuple[np.ndarray, list[str],
                                                                            list[tuple[str, str]]]:
    """Stack the readable images; return (batch NHWC, used paths, skipped [(path, why)])."""
    arrays, used, skipped = [], [], []
    for p in paths:
        try:
            arrays.append(load_image(p, pp, max_pixels))
            used.append(str(p))
        except ImageReadError as exc:
            skipped.append((str(p), str(exc)))
    batch = np.stack(arrays) if arrays else np.zeros((0, pp.height, pp.width, pp.channels), np.float32)
    return batch, used, skipped
