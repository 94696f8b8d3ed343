"""OpenCV DNN backend for .onnx (cv2.dnn.readNetFromONNX); CPU, no extra package beyond OpenCV.

OpenCV does not report input shapes or metadata, so those come from the ONNX graph itself
(read with onnxruntime without optimizations, else with the onnx package).
"""

from __future__ import annotations

import time

import numpy as np

from edgeproof.contract import METADATA_KEY, ArtifactMeta
from edgeproof.errors import EdgeproofError, UsageError, require
from edgeproof.runtime.backends.base import Backend, warn
from edgeproof.runtime.backends.onnx_graph import read_io


def _trial_shape(shape: list) -> list[int] | None:
    """The input shape for the guarded trial run (dynamic batch -> 1); None when other dims are dynamic."""
    fixed = [1 if i == 0 and not isinstance(d, int) else d for i, d in enumerate(shape or [])]
    return fixed if fixed and all(isinstance(d, int) for d in fixed) else None


class OpenCVBackend(Backend):
    name = "opencv"

    @classmethod
    def check_options(cls, delegates, providers) -> str | None:
        return None  # load() refuses any accelerator itself (or, with allow_fallback, warns and goes on)

    @classmethod
    def trial(cls):
        """What runtime.guard runs in a child first: OpenCV's importer can crash the process on a damaged file."""
        import cv2

        from edgeproof.runtime import guard

        return guard.Trial(cls.name, "OpenCV DNN", cv2.__version__, guard.OPENCV_TRIAL)

    @classmethod
    def bare_loop(cls, path, threads, x, model=None):
        """cv2.dnn readNetFromONNX: setInput / forward."""
        from edgeproof.runtime.backends.bare_loop import Baseline

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

    @classmethod
    def inspect_load(cls, path, report) -> None:
        """The guarded trial (unless the manifest vouched for the file), then OpenCV's own reader."""
        import cv2

        from edgeproof.runtime.guard import guarded_load

        inputs = report.get("inputs") or [{}]
        vouched = report["sha256"] if (report.get("integrity") or {}).get("matches") else None
        guarded_load(path, cls.trial(), "onnx", vouched, _trial_shape(inputs[0].get("shape")))
        cv2.dnn.readNetFromONNX(str(path))

    def load(self) -> None:
        cv2 = require("cv2", None, "the opencv backend", package="opencv-python-headless")
        if self.path.suffix.lower() != ".onnx":
            raise UsageError(f"the opencv backend reads .onnx files; got '{self.path.name}' (use --backend litert)")
        if self.delegates or [p for p in self.providers if p != "CPUExecutionProvider"]:
            msg = "the opencv backend runs on the CPU only; it ignores delegates/execution providers"
            if not self.allow_fallback:
                raise EdgeproofError(msg + " (use --backend onnxruntime, or --allow-fallback)")
            warn(f"FALLBACK: {msg}")
        # ONNX Runtime parses and checks the graph first (it rejects damaged files cleanly); OpenCV's importer
        # can crash the process on them, so it reads an unvouched file in a guarded child first.
        self.input_spec, self.output_spec, self._props = read_io(self.path)
        from edgeproof.runtime.guard import guarded_load

        guarded_load(self.path, self.trial(), "onnx", self.verified_sha256, _trial_shape(self.input_spec.shape),
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
