"""The one place that finds a TFLite interpreter and reads its tensors (every .tflite reader uses it).

Import ladder: ai-edge-litert, then legacy tflite-runtime, then (slow, warned; only where a caller
allows it) tensorflow.lite. `tensor_spec` turns interpreter tensor details into a TensorSpec and
`io_quantization` reads the first input's/output's scale and zero point for runtimes that do not
expose them (OpenVINO, LiteRT CompiledModel).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeproof.contract import TensorSpec
from edgeproof.errors import MissingDependency


def light_interpreter() -> tuple[Any, Any, str] | None:
    """(Interpreter class, load_delegate, runtime name) of ai-edge-litert or tflite-runtime; None without
    either (TensorFlow is too heavy to import for a check)."""
    try:
        from ai_edge_litert.interpreter import Interpreter, load_delegate

        return Interpreter, load_delegate, "ai-edge-litert"
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter, load_delegate

        return Interpreter, load_delegate, "tflite-runtime"
    except ImportError:
        return None


def import_interpreter() -> tuple[Any, Any, str]:
    """(Interpreter class, load_delegate, runtime name), preferring the light runtimes; tensorflow.lite last."""
    found = light_interpreter()
    if found is not None:
        return found
    try:
        import tensorflow as tf
    except ImportError:
        raise MissingDependency("ai-edge-litert", None, "running .tflite models") from None
    from edgeproof.runtime.backends.base import warn

    warn("neither ai-edge-litert nor tflite-runtime is installed; using tensorflow.lite (seconds to start, "
         "~600 MiB). Install the light runtime: pip install ai-edge-litert")
    return tf.lite.Interpreter, tf.lite.experimental.load_delegate, "tensorflow.lite"


def op_resolver_without_delegates(interpreter_cls: Any) -> Any | None:
    """The BUILTIN_WITHOUT_DEFAULT_DELEGATES resolver of this interpreter's module (None if it has none):
    an interpreter built with it prepares tensors without XNNPACK, in about a millisecond."""
    import sys

    resolver = getattr(sys.modules.get(interpreter_cls.__module__), "OpResolverType", None)
    return None if resolver is None else resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES


def bare_interpreter(path: str | Path) -> Any:
    """A light interpreter on `path` without default delegates (cheap to build; not allocated).

    MissingDependency without ai-edge-litert/tflite-runtime."""
    found = light_interpreter()
    if found is None:
        raise MissingDependency("ai-edge-litert", None, "reading .tflite tensors")
    cls = found[0]
    resolver = op_resolver_without_delegates(cls)
    with quiet_runtime_info():
        if resolver is None:
            return cls(model_path=str(path))
        return cls(model_path=str(path), experimental_op_resolver_type=resolver)


def tensor_spec(d: dict) -> TensorSpec:
    """TensorSpec from an interpreter's tensor details (-1 in the shape signature -> None)."""
    sig = d.get("shape_signature")
    shape = [None if int(v) < 0 else int(v) for v in (sig if sig is not None and len(sig) else d["shape"])]
    dtype = np.dtype(d["dtype"]).name
    scale, zp = d.get("quantization", (0.0, 0))
    quant = dtype in ("int8", "uint8", "int16") and scale
    return TensorSpec(name=d["name"], shape=shape, dtype=dtype,
                      scale=float(scale) if quant else None, zero_point=int(zp) if quant else None)


def io_specs(path: str | Path) -> tuple[TensorSpec, TensorSpec]:
    """(first input, first output) TensorSpec of a .tflite file, read by a light interpreter."""
    it = bare_interpreter(path)
    return tensor_spec(it.get_input_details()[0]), tensor_spec(it.get_output_details()[0])


def io_quantization(path: str | Path) -> dict[int, tuple[float, int]]:
    """{0: input (scale, zero point), 1: output ...} of an integer .tflite; {} without a light interpreter."""
    try:
        specs = io_specs(path)
    except MissingDependency:
        return {}
    return {k: (s.scale, s.zero_point or 0) for k, s in enumerate(specs) if s.scale}


def quiet_runtime_info():
    """Drop the runtime's C++ 'INFO: ...' lines from stderr while it builds the interpreter."""
    from edgeproof.stderr_filter import filtered_stderr

    return filtered_stderr(lambda line: not line.startswith("INFO: "))
