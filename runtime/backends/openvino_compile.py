"""The OpenVINO Core and CPU compile that every edgeproof caller shares: the backend, its guarded trial
child, the bench baseline, `inspect` and device detection. Each works around an OpenVINO 2026.4 CPU-plugin bug."""

from __future__ import annotations

import threading
from typing import Any

_CORES: dict[int, tuple[Any, Any]] = {}  # id(openvino module) -> (module, its Core): both live until exit
_CORES_LOCK = threading.Lock()


def shared_core(ov: Any) -> Any:
    """The process's one `ov.Core()` (per openvino module), kept until exit; every edgeproof caller uses it.

    OpenVINO's CPU plugin gives each Core an alternate signal stack (sigaltstack) on the thread that first
    uses it, and when that Core is destroyed it unmaps the stack and puts back the one it found. Two Cores
    destroyed in any order but the reverse one leave the thread's alternate stack pointing at unmapped
    memory (seen on 2026.4.1), and the next signal Python handles on that thread -- Ctrl-C, SIGTERM --
    kills the process with SIGSEGV instead of stopping it cleanly. One Core that lives as long as the
    process never unmaps a stack in use. OpenVINO recommends one Core per application anyway; it is
    thread-safe, and every compile_model call passes its own properties, so nothing per-run is shared.
    """
    with _CORES_LOCK:
        if id(ov) not in _CORES:
            _CORES[id(ov)] = (ov, ov.Core())
        return _CORES[id(ov)][1]


def batch_of_one(model: Any) -> bool:
    """Make the input's dynamic batch dimension a static 1, in place; False when there is none to fix."""
    shape = model.inputs[0].get_partial_shape()
    if not shape.rank.is_static or shape.rank.get_length() == 0 or not shape[0].is_dynamic:
        return False
    shape[0] = 1
    model.reshape({model.inputs[0]: shape})
    return True


def compile_on_cpu(core: Any, model: Any, config: dict[str, Any]) -> tuple[Any, Exception | None]:
    """compile_model on CPU -> (compiled, None); where that fails on a dynamic batch, once more at batch 1 ->
    (compiled, the first error). The CPU plugin rejects some graphs with a dynamic batch that it compiles at
    batch 1 (OpenVINO 2026.4 on EfficientNet's quantized TFLite files: '[TransposeToReshape] ...
    FullyConnectedCompressed'). When batch 1 fails too, the first error is raised."""
    try:
        return core.compile_model(model, "CPU", config), None
    except RuntimeError as exc:  # OpenVINO's compile errors (its C++ exceptions)
        if not batch_of_one(model):
            raise
        try:
            return core.compile_model(model, "CPU", config), exc  # the caller warns, naming exc
        except RuntimeError:
            raise exc from None
