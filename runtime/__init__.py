"""The lightweight runtime: loads .tflite/.onnx artifacts and runs them without TensorFlow.

    from edgeproof.runtime import load
    model = load("model.tflite-int8.tflite")
    x = preprocess.load_batch(paths, model.preprocess)[0]
    model.topk(model.predict(x), k=5)

    from edgeproof.runtime import LoadSpec, run_session      # `edgeproof run` as a call
    summary = run_session(LoadSpec("model.onnx"), "photos/", sinks=[print])

Names are imported lazily so that `import edgeproof.runtime` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from edgeproof.runtime.model import Model, load
    from edgeproof.runtime.session import RunOptions, run_session
    from edgeproof.runtime.spec import LoadSpec

_WHERE = {"Model": "model", "load": "model", "LoadSpec": "spec", "RunOptions": "session", "run_session": "session"}
__all__ = ["LoadSpec", "Model", "RunOptions", "load", "run_session"]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"edgeproof.runtime.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'edgeproof.runtime' has no attribute {name!r}")
