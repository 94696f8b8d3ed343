"""The bare loops a user would otherwise write, timed in the same run as edgeproof.

Each backend class writes its own loop (``Backend.bare_loop``, with the helpers here). Each loads the
model with the library's own API and the same thread count, converts the benchmark input to the model's native dtype/layout ONCE (as a hand-written loop on a fixed input
would), and then each call does only the library's minimum: set input, run, fetch output.
So ``overhead_ratio`` charges edgeproof for everything it adds per call (quantize/dequantize,
layout, batching, output handling).

TensorFlow is imported only by ``keras_baselines``, which the runner calls in its own subprocess
and only when a .keras model was given.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
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


def bare_baseline(backend: str, path: str | Path, threads: int | None, x: np.ndarray,
                  model=None) -> Baseline | None:
    """The bare loop for ``backend`` (its class's ``bare_loop``), or None when it has none (``model``: the
    edgeproof Model of the same file, whose settings the baseline mirrors where a library hides them)."""
    from edgeproof.formats import backend_class

    return backend_class(backend).bare_loop(path, threads, x, model)


def keras_baselines(path: str | Path, threads: int | None, make_input: Callable[[int, int], np.ndarray]
                    ) -> tuple[dict[str, Callable], dict, np.ndarray]:
    """Keras ``model(x)`` and ``model.predict(x)`` on a .keras model (imports TensorFlow here).

    ``make_input(height, width)`` builds the benchmark batch once the model's input size is known.
    Returns the callables, facts (import and load seconds, versions) and the input. Call only in a
    process that may import TensorFlow.
    """
    from edgeproof.train.run_dir import load_keras_model
    from edgeproof.train.tf_quiet import import_tensorflow

    t0 = time.perf_counter()
    tf = import_tensorflow("the Keras baseline")
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(int(threads))
        tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras  # noqa: F401 - counted in the import time, not the load time

    import_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    model = load_keras_model(path, "the Keras baseline")
    load_s = time.perf_counter() - t1
    shape = model.inputs[0].shape  # (None, H, W, 3)
    if len(shape) != 4 or shape[1] is None or shape[2] is None:
        from edgeproof.errors import UsageError

        raise UsageError(f"Keras model '{path}' has input shape {tuple(shape)}; the benchmark needs a fixed "
                         "(None, H, W, 3) image input")
    x = make_input(int(shape[1]), int(shape[2]))
    xt = tf.constant(x)

    def call_model():
        return model(xt, training=False).numpy()

    def call_predict():
        return model.predict(x, batch_size=len(x), verbose=0)

    facts = {"import_s": import_s, "load_s": load_s, "tensorflow": tf.__version__, "keras": keras.__version__}
    return {"keras model(x)": call_model, "keras predict()": call_predict}, facts, x
