"""uint8 pixels straight into a quantized model input, by one integer op where it equals the float path exactly.

A decoded image is uint8. For an int8 model whose input quantization undoes the contract's normalization
(scale 1 and zero point -128 on 0..255 pixels, scale 1/255 on pixels scaled by 1/255, ...), quantizing the
float pixels gives v - 128 for every value v: the same bytes as v ^ 0x80. For a uint8 model with such a map it
is v itself. `pixel_mask` finds this once per model by running the float path (normalize, then the Model's own
quantize) on all 256 values of every channel, so the integer path is exact by construction, never assumed.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edgeproof.contract import Preprocess


def pixel_mask(pp: Preprocess, in_dtype: np.dtype, quantize: Callable[[np.ndarray], np.ndarray]) -> np.uint8 | None:
    """0x80 (int8: v ^ 0x80) or 0 (uint8: v) when quantize(normalize(float32(v))) has those bytes for every
    pixel value v and channel; None when the map is any other one (the float path is used then)."""
    from edgeproof.runtime.preprocess import normalize

    if np.dtype(in_dtype) not in (np.dtype(np.int8), np.dtype(np.uint8)) or pp.layout != "NHWC":
        return None
    v = np.arange(256, dtype=np.uint8)
    px = np.ascontiguousarray(np.repeat(v[:, None], pp.channels, axis=1))[None, None]  # (1, 1, 256, C)
    q = np.ascontiguousarray(quantize(normalize(px.astype(np.float32), pp))).view(np.uint8)
    for mask in (0x80, 0) if np.dtype(in_dtype) == np.int8 else (0,):
        if np.array_equal(q, px ^ np.uint8(mask)):
            return np.uint8(mask)
    return None


def dequantize_table(dtype: np.dtype, scale: np.float32, zero_point: np.float32) -> np.ndarray | None:
    """float32 (q - zero_point) * scale for every int8/uint8 value q, at q's byte (None for wider types), so that
    table.take(q) dequantizes (a negative int8 counts from the end: -1 is byte 255): one look-up instead of two
    NumPy passes and their allocations, with the same float32 result."""
    if np.dtype(dtype) not in (np.dtype(np.int8), np.dtype(np.uint8)):
        return None
    q = np.arange(256, dtype=np.uint8).view(dtype)
    out = np.subtract(q, zero_point, dtype=np.float32)
    out *= scale
    return out
