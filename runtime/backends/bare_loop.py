"""The bare loop a user would otherwise write, one per backend (``Backend.bare_loop``), and its helpers.

Each backend loads the model with the library's own API and the same thread count, converts the benchmark
input to the model's native dtype/layout ONCE (as a hand-written loop on a fixed input would), and then each
call does only the library's minimum: set input, run, fetch output. ``edgeproof bench`` times these next to
edgeproof's own call, so ``overhead_ratio`` charges edgeproof for everything it adds per call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Baseline:
    """One ready-to-call bare loop body. ``call()`` runs one inference on the prepared input."""

    name: str  # e.g. "litert invoke()"
    call: Callable[[], Any]
    load_s: float
    notes: dict = field(default_factory=dict)
    close: Callable[[], None] = lambda: None
    # For int8/uint8 I/O: the same loop also quantizing the float input and dequantizing the output
    # on every call (what a user's loop over new images must do); None for float models.
    call_user: Callable[[], Any] | None = None


def _user_loop(call: Callable[[Any], Any], x: np.ndarray, dtype, scale: float, zp: int,
               out_scale: float | None, out_zp: int | None) -> Callable[[], Any]:
    def run():
        y = call(quantize_like(x, dtype, scale, zp))
        if out_scale:
            y = (y.astype(np.float32) - out_zp) * out_scale
        return y

    return run


def quantize_like(x: np.ndarray, dtype: np.dtype, scale: float, zero_point: int) -> np.ndarray:
    """float32 -> int8/uint8 with the tensor's scale and zero point (what a user does by hand)."""
    info = np.iinfo(dtype)
    q = np.round(x / scale + zero_point)
    return np.clip(q, info.min, info.max).astype(dtype)


def native_input(x: np.ndarray, spec) -> np.ndarray:
    """The benchmark input in the model's own dtype (quantized with its scale for int8/uint8), once."""
    if spec.dtype in ("int8", "uint8") and spec.scale:
        return quantize_like(x, np.dtype(spec.dtype), spec.scale, spec.zero_point or 0)
    return x.astype(spec.dtype) if np.dtype(spec.dtype) != x.dtype else x


def quantizing_loop(call: Callable[[Any], Any], x: np.ndarray, in_spec, out_spec) -> Callable[[], Any] | None:
    """For int8/uint8 input: `call` on input quantized (and output dequantized) on every call; else None."""
    if in_spec.dtype not in ("int8", "uint8") or not in_spec.scale:
        return None
    o_scale = out_spec.scale if out_spec is not None and out_spec.dtype in ("int8", "uint8") else None
    return _user_loop(call, x, np.dtype(in_spec.dtype), in_spec.scale, in_spec.zero_point or 0, o_scale,
                      (out_spec.zero_point or 0) if o_scale else None)


def to_layout(x: np.ndarray, shape: list) -> np.ndarray:
    """NHWC input -> NCHW when the model declares channels first (dim 1 == 3, last dim != 3)."""
    if len(shape) == 4 and shape[1] == x.shape[3] and shape[3] != x.shape[3]:
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    return x
