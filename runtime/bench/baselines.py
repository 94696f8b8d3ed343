"""The bare loops a user would otherwise write, timed in the same run as edgeproof.

Each baseline loads the model with the library's own API and the same thread count, converts the
benchmark input to the model's native dtype/layout ONCE (as a hand-written loop on a fixed input
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

from edgeproof.errors import UsageError


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


def litert_baseline(path: str | Path, threads: int | None, x: np.ndarray) -> Baseline:
    """ai_edge_litert Interpreter: set_tensor / invoke / get_tensor."""
    t0 = time.perf_counter()
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=threads)
    inp = interp.get_input_details()[0]
    if tuple(inp["shape"]) != tuple(x.shape):
        interp.resize_tensor_input(inp["index"], list(x.shape))
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]
    load_s = time.perf_counter() - t0
    xin = x
    if inp["dtype"] in (np.int8, np.uint8):
        scale, zp = inp["quantization"]
        xin = quantize_like(x, inp["dtype"], scale, zp)
    elif inp["dtype"] != x.dtype:
        xin = x.astype(inp["dtype"])
    in_idx, out_idx = inp["index"], out["index"]

    def run(arr):
        interp.set_tensor(in_idx, arr)
        interp.invoke()
        return interp.get_tensor(out_idx)

    user = None
    if inp["dtype"] in (np.int8, np.uint8):
        o_scale, o_zp = out["quantization"] if out["dtype"] in (np.int8, np.uint8) else (None, None)
        user = _user_loop(run, x, inp["dtype"], *inp["quantization"], o_scale, o_zp)
    return Baseline("litert invoke()", lambda: run(xin), load_s, {"input_dtype": np.dtype(inp["dtype"]).name},
                    call_user=user)


def onnxruntime_baseline(path: str | Path, threads: int | None, x: np.ndarray) -> Baseline:
    """onnxruntime InferenceSession.run on the CPU execution provider."""
    t0 = time.perf_counter()
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"], enable_fallback=0)
    load_s = time.perf_counter() - t0
    inp = sess.get_inputs()[0]
    xin = _to_layout(x, inp.shape)
    feeds = {inp.name: xin}

    def call():
        return sess.run(None, feeds)

    return Baseline("onnxruntime run()", call, load_s)


def opencv_baseline(path: str | Path, threads: int | None, x: np.ndarray) -> Baseline:
    """cv2.dnn readNetFromONNX: setInput / forward."""
    t0 = time.perf_counter()
    import cv2

    if threads:
        cv2.setNumThreads(threads)
    net = cv2.dnn.readNetFromONNX(str(path))
    load_s = time.perf_counter() - t0
    xin = np.ascontiguousarray(x)

    def call():
        net.setInput(xin)
        return net.forward()

    return Baseline("opencv dnn forward()", call, load_s)


def openvino_baseline(path: str | Path, threads: int | None, x: np.ndarray, model=None) -> Baseline:
    """OpenVINO compile_model on CPU: InferRequest.infer.

    Compiled with the same properties edgeproof uses (threads, PERFORMANCE_HINT=LATENCY and the
    inference precision, f32 by default; OpenVINO's own default on bf16-capable CPUs is bf16), so
    the ratio measures the wrapper, not a precision change. Quantized inputs take the scale and
    zero point from the loaded edgeproof model (OpenVINO does not expose them).
    """
    t0 = time.perf_counter()
    import openvino as ov

    core = ov.Core()
    precision = getattr(getattr(model, "backend", None), "precision", None) or "f32"
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
    req = compiled.create_infer_request()
    load_s = time.perf_counter() - t0
    try:  # what the plugin really compiled with, as the record says (not just what was asked)
        value = compiled.get_property("INFERENCE_PRECISION_HINT")
        precision = value.get_type_name() if hasattr(value, "get_type_name") else str(value)
    except Exception:  # noqa: BLE001 - a device without the property: keep the requested one
        pass
    port = compiled.input(0)
    et = port.get_element_type().to_dtype()
    dims = [d.get_length() if d.is_static else None for d in port.get_partial_shape()]
    xf = _to_layout(x, dims)

    def run(arr):
        req.infer({0: arr})
        return req.get_output_tensor(0).data

    user = None
    if et in (np.int8, np.uint8):
        spec, ospec = getattr(model, "input_spec", None), getattr(model, "output_spec", None)
        if spec is None or not spec.scale:
            raise UsageError("OpenVINO baseline: the model's int8 input scale is unknown")
        xin = quantize_like(xf, et, spec.scale, spec.zero_point or 0)
        o_scale = ospec.scale if ospec is not None and ospec.dtype in ("int8", "uint8") else None
        user = _user_loop(run, xf, et, spec.scale, spec.zero_point or 0, o_scale,
                          (ospec.zero_point or 0) if o_scale else None)
    else:
        xin = xf.astype(et) if et != xf.dtype else xf
    return Baseline("openvino infer()", lambda: run(xin), load_s, {"precision": precision}, call_user=user)


def _to_layout(x: np.ndarray, shape: list) -> np.ndarray:
    """NHWC input -> NCHW when the model declares channels first (dim 1 == 3, last dim != 3)."""
    if len(shape) == 4 and shape[1] == x.shape[3] and shape[3] != x.shape[3]:
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    return x


BARE: dict[str, Callable[..., Baseline]] = {
    "litert": litert_baseline,
    "onnxruntime": onnxruntime_baseline,
    "opencv": opencv_baseline,
    "openvino": openvino_baseline,
}


def bare_baseline(backend: str, path: str | Path, threads: int | None, x: np.ndarray,
                  model=None) -> Baseline | None:
    """The bare loop for ``backend``, or None when there is none for it (``model``: the edgeproof
    Model of the same file, whose settings the baseline mirrors where a library hides them)."""
    maker = BARE.get(backend)
    if maker is None:
        return None
    return maker(path, threads, x, model) if backend == "openvino" else maker(path, threads, x)


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
