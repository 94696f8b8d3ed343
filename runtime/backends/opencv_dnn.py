"""OpenCV DNN backend for .onnx (cv2.dnn.readNetFromONNX); CPU, no extra package beyond OpenCV.

OpenCV does not report input shapes or metadata, so those come from the ONNX graph itself
(read with onnxruntime without optimizations, else with the onnx package).
"""

from __future__ import annotations

import numpy as np

from edgeproof.contract import METADATA_KEY, ArtifactMeta, TensorSpec
from edgeproof.errors import EdgeproofError, UsageError, require
from edgeproof.runtime.backends.base import Backend

ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 10: "float16", 11: "float64", 6: "int32", 7: "int64"}


def onnx_io(path) -> tuple[TensorSpec, TensorSpec, dict[str, str]]:
    """(input spec, output spec, metadata_props) of an ONNX file without running it."""
    try:
        import onnxruntime as ort

        from edgeproof.runtime.backends.onnxrt import ort_spec

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        so.log_severity_level = 3
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"], enable_fallback=0)
        return (ort_spec(sess.get_inputs()[0]), ort_spec(sess.get_outputs()[0]),
                dict(sess.get_modelmeta().custom_metadata_map))
    except ImportError:
        pass
    onnx = require("onnx", None, "reading ONNX input shapes for the opencv backend")
    m = onnx.load(str(path), load_external_data=False)
    init = {i.name for i in m.graph.initializer}

    def spec(v) -> TensorSpec:
        tt = v.type.tensor_type
        return TensorSpec(name=v.name, shape=[d.dim_value if d.dim_value > 0 else None for d in tt.shape.dim],
                          dtype=ONNX_DTYPES.get(tt.elem_type, str(tt.elem_type)))

    inputs = [v for v in m.graph.input if v.name not in init]
    return spec(inputs[0]), spec(m.graph.output[0]), {p.key: p.value for p in m.metadata_props}


class OpenCVBackend(Backend):
    name = "opencv"

    def load(self) -> None:
        cv2 = require("cv2", None, "the opencv backend", package="opencv-python-headless")
        if self.path.suffix.lower() != ".onnx":
            raise UsageError(f"the opencv backend reads .onnx files; got '{self.path.name}' (use --backend litert)")
        if self.delegates or [p for p in self.providers if p != "CPUExecutionProvider"]:
            msg = "the opencv backend runs on the CPU only; it ignores delegates/execution providers"
            if not self.allow_fallback:
                raise EdgeproofError(msg + " (use --backend onnxruntime, or --allow-fallback)")
            from edgeproof.cli.console import warn

            warn(f"[bold red]FALLBACK[/]: {msg}", markup=True)
        # ONNX Runtime parses and checks the graph first (it rejects damaged files cleanly); OpenCV's importer
        # can crash the process on them, so it reads an unvouched file in a guarded child first.
        self.input_spec, self.output_spec, self._props = onnx_io(self.path)
        from edgeproof.runtime.guard import guarded_load

        shape = [1 if d is None and i == 0 else d for i, d in enumerate(self.input_spec.shape)]
        guarded_load(self.path, self.name, "onnx", self.verified_sha256,
                     shape if shape and all(isinstance(d, int) for d in shape) else None,
                     self.input_spec.dtype if self.input_spec.dtype in ("float32", "uint8", "int8") else "float32")
        try:
            net = cv2.dnn.readNetFromONNX(str(self.path))
        except cv2.error as exc:
            lines = [ln for ln in str(exc).splitlines() if ln.strip()]
            raise UsageError(f"OpenCV DNN cannot read '{self.path}': {lines[-1] if lines else exc}; "
                             "run it with --backend onnxruntime instead (OpenCV DNN lacks some ops, e.g. "
                             "quantized QDQ graphs)") from None
        if self.threads:
            cv2.setNumThreads(int(self.threads))  # process-wide in OpenCV
        self.batch_ok = bool(self.input_spec.shape) and self.input_spec.shape[0] is None
        self._net = net
        self._set, self._forward = net.setInput, net.forward
        self.placement = {"accelerator": 0, "cpu": None, "total": None, "where": "cpu (OpenCV DNN)"}

    def read_meta(self) -> ArtifactMeta | None:
        text = self._props.get(METADATA_KEY)
        from edgeproof.runtime.metadata import parse_metadata

        return parse_metadata(text, self.path) if text else None

    def run(self, x: np.ndarray) -> np.ndarray:
        self._set(x)
        return self._forward()

    def close(self) -> None:
        self._set = self._forward = None
        self._net = None
