"""Check a freshly written artifact before it is renamed into place: it loads in its runtime,
runs one image to the expected output shape, and its embedded metadata reads back unchanged."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeproof.contract import ArtifactMeta
from edgeproof.errors import CheckFailed


def _check_output(fmt: str, runtime: str, y: np.ndarray, meta: ArtifactMeta) -> None:
    want = (1, len(meta.labels))
    if tuple(y.shape) != want:
        raise CheckFailed(f"{fmt}: {runtime} output shape {tuple(y.shape)}, expected {want} (1 image, {want[1]} labels)")
    if not np.all(np.isfinite(y)):
        raise CheckFailed(f"{fmt}: {runtime} output contains NaN/inf for a calibration image")


def _check_meta(fmt: str, found: ArtifactMeta | None, meta: ArtifactMeta) -> None:
    if found is None or found.to_dict() != meta.to_dict():
        raise CheckFailed(f"{fmt}: embedded metadata did not read back unchanged")


def _predict_with_runtime(backend_cls, path: Path, meta: ArtifactMeta, sample: np.ndarray, runtime: str):
    """One image through the runtime users get (quantization, layout, dequantization included).

    The backend class is used directly: the temp file's '.tmp' suffix would defeat suffix dispatch."""
    from edgeproof.runtime.model import Model

    backend = backend_cls(path)
    try:
        backend.load()
        return Model(path, backend, meta).predict(sample)
    except Exception as exc:  # noqa: BLE001 - any runtime/converter error becomes one reported line
        raise CheckFailed(f"{meta.format}: {runtime} cannot load/run it: {str(exc).strip()[:300]}") from None
    finally:
        backend.close()


def verify_tflite(path: Path, meta: ArtifactMeta, sample: np.ndarray, compiled_edgetpu: bool = False) -> list[str]:
    from edgeproof.runtime.metadata import read_tflite_metadata

    _check_meta(meta.format, read_tflite_metadata(path), meta)
    if compiled_edgetpu:
        # The edgetpu-custom-op resolves only with libedgetpu and a device attached.
        return ["compiled Edge TPU model: loads only with the libedgetpu delegate; CPU load check skipped"]
    from edgeproof.runtime.backends.litert import LiteRTBackend

    y = _predict_with_runtime(LiteRTBackend, path, meta, sample, "ai_edge_litert")
    _check_output(meta.format, "ai_edge_litert", y, meta)
    return []


def verify_onnx(path: Path, meta: ArtifactMeta, sample: np.ndarray) -> list[str]:
    from edgeproof.runtime.backends.onnxrt import OnnxRuntimeBackend
    from edgeproof.runtime.metadata import read_onnx_metadata

    _check_meta(meta.format, read_onnx_metadata(path), meta)
    y = _predict_with_runtime(OnnxRuntimeBackend, path, meta, sample, "onnxruntime")
    _check_output(meta.format, "onnxruntime", y, meta)
    return []
