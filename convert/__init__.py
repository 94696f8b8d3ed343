"""Conversion and quantization: Keras -> TFLite (fp32/fp16/dynamic/int8, Edge TPU) and ONNX (fp32/int8).

TensorFlow, tf2onnx and onnx are imported only when a conversion runs.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ArtifactResult", "ConvertOptions", "Manifest", "convert_run"]


def convert_run(*args: Any, **kwargs: Any):
    """See edgeproof.convert.pipeline.convert_run."""
    from edgeproof.convert.pipeline import convert_run as _convert_run

    return _convert_run(*args, **kwargs)


def __getattr__(name: str):
    if name == "ConvertOptions":
        from edgeproof.convert.options import ConvertOptions

        return ConvertOptions
    if name in ("Manifest", "ArtifactResult"):
        from edgeproof.convert import manifest

        return getattr(manifest, name)
    raise AttributeError(name)
