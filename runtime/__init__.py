"""The lightweight runtime: loads .tflite/.onnx artifacts and runs them without TensorFlow.

    from edgeproof.runtime import load
    model = load("model.tflite-int8.tflite")
    x = preprocess.load_batch(paths, model.preprocess)[0]
    model.topk(model.predict(x), k=5)

Names are imported lazily so that `import edgeproof.runtime` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from edgeproof.runtime.model import LoadSpec, Model, load

__all__ = ["LoadSpec", "Model", "load"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from edgeproof.runtime import model

        return getattr(model, name)
    raise AttributeError(f"module 'edgeproof.runtime' has no attribute {name!r}")
