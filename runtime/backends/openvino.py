"""OpenVINO backend: `openvino.Core().read_model()` reads .onnx and .tflite directly.

The device comes from `providers`: one OpenVINO device name (CPU, GPU, GPU.1, NPU or AUTO; the
device profiles `intel`, `intel-gpu`, `intel-npu` put it there); default CPU. A device that is
missing or fails to compile the model is an error naming the device and its install line, or --
only with allow_fallback -- a loud warning and CPU.

Precision: OpenVINO's CPU plugin computes in bfloat16 by default on CPUs with BF16/AMX (max|Δ|
~2e-4 on the tiny test model); edgeproof asks for f32 so float32 parity holds (~1e-7). Pass
precision="bf16"/"f16" (or EDGEPROOF_OPENVINO_PRECISION) to trade accuracy for speed.
"""

from __future__ import annotations

import os
import re
from typing import Any

import numpy as np

from edgeproof.contract import TensorSpec
from edgeproof.errors import EdgeproofError, UsageError, require
from edgeproof.runtime.backends.base import Backend

DEVICE_RE = re.compile(r"^(CPU|GPU|NPU|AUTO)(\.\d+)?$")
DEVICE_INSTALL = {
    "GPU": "sudo apt install intel-opencl-icd and add your user to the 'render' group (Intel GPU compute runtime)",
    "NPU": "install the Intel NPU driver (github.com/intel/linux-npu-driver) and add your user to 'render'",
}
_OV_DTYPES = {"f32": "float32", "f16": "float16", "bf16": "bfloat16", "f64": "float64", "i8": "int8",
              "u8": "uint8", "i16": "int16", "i32": "int32", "i64": "int64", "boolean": "bool"}
_NOT_LAYERS = {"Input", "Output", "Const", "Parameter", "Result", "Constant"}


def _tflite_quant(path) -> dict[int, tuple[float, int]]:
    """Input/output quantization of an int .tflite from its flatbuffer (OpenVINO does not expose it)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            return {}
    it = Interpreter(model_path=str(path))
    found = {}
    for key, d in ((0, it.get_input_details()[0]), (1, it.get_output_details()[0])):
        scale, zp = d["quantization"]
        if scale:
            found[key] = (float(scale), int(zp))
    return found


class OpenVINOBackend(Backend):
    name = "openvino"
    # Tests swap in a fake Core (e.g. one that lists a GPU that fails to compile); None: openvino.Core.
    core_factory: Any = None

    def __init__(self, *args: Any, precision: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.precision = precision or os.environ.get("EDGEPROOF_OPENVINO_PRECISION") or "f32"
        devices = [p for p in self.providers if p]
        if len(devices) > 1 or (devices and not DEVICE_RE.match(devices[0])):
            raise UsageError(
                f"the openvino backend takes one OpenVINO device as its provider, got {devices}; "
                "valid: CPU, GPU, GPU.1, NPU, AUTO (e.g. --device intel-gpu)")
        self.device = devices[0] if devices else "CPU"
        self.requested_device = self.device

    # ---- loading -------------------------------------------------------------------------
    def load(self) -> None:
        ov = require("openvino", "openvino", "the openvino backend")
        self._ov = ov
        core = (self.core_factory or ov.Core)()
        try:
            with _quiet_frontends():
                model = core.read_model(str(self.path))
        except Exception as exc:
            from edgeproof.formats import family_of
            from edgeproof.runtime.model_check import invalid

            raise invalid(self.path, family_of(self.path), f"OpenVINO {ov.__version__.split('-')[0]} cannot read "
                          f"it ({_first_line(exc)})") from None
        if len(model.inputs) != 1:
            raise EdgeproofError(f"'{self.path.name}' has {len(model.inputs)} inputs; edgeproof runs "
                                 "single-input image classifiers")
        self._check_device(core)
        if self.device.startswith("NPU") and model.inputs[0].get_partial_shape().is_dynamic:
            # The NPU compiles static shapes only: fix the dynamic batch to 1 (Model loops over items).
            shape = model.inputs[0].get_partial_shape()
            shape[0] = 1
            model.reshape({model.inputs[0]: shape})
        try:
            compiled = core.compile_model(model, self.device, self._config(core, self.device))
        except Exception as exc:
            if self.device == "CPU":
                raise UsageError(f"OpenVINO cannot compile '{self.path.name}' for CPU: {_first_line(exc)}; the file "
                                 "may be damaged, or use another backend") from None
            self._device_failed(f"compiling '{self.path.name}' for {self.device} failed: {_first_line(exc)}")
            compiled = core.compile_model(model, "CPU", self._config(core, "CPU"))
        self._compiled = compiled
        self._request = compiled.create_infer_request()
        self.model_ops = sum(1 for op in model.get_ops() if op.get_type_name() not in _NOT_LAYERS)
        quant = _tflite_quant(self.path) if self.path.suffix.lower() == ".tflite" else {}
        self.input_spec = self._spec(model.inputs[0], quant.get(0))
        self.output_spec = self._spec(model.outputs[0], quant.get(1))
        self._quant_fixup()
        self.batch_ok = compiled.inputs[0].get_partial_shape()[0].is_dynamic
        self.placement = self._placement()

    def _check_device(self, core: Any) -> None:
        if self.device in ("CPU", "AUTO"):
            return
        available = list(core.available_devices)
        base = self.device.split(".")[0]
        if self.device in available or (base == self.device and any(d.split(".")[0] == base for d in available)):
            return
        self._device_failed(f"OpenVINO device '{self.device}' is not available "
                            f"(OpenVINO lists: {', '.join(available) or 'none'})")

    def _device_failed(self, why: str) -> None:
        line = self.install_hint or DEVICE_INSTALL.get(self.device.split(".")[0], "install its OpenVINO driver")
        self._accelerator_unavailable("DEVICE", [self.device], f"{why}; install: {line}")
        self.device = "CPU"

    def _config(self, core: Any, device: str) -> dict[str, Any]:
        """Only properties the device supports: threads on CPU, the precision hint where it exists.

        AUTO takes neither itself: they go to each candidate device through DEVICE_PROPERTIES, and
        startup fallback is off so EXECUTION_DEVICES names the device that really runs the model.
        """
        if device == "AUTO":
            per_device = {d: self._config(core, d) for d in core.available_devices}
            return {"DEVICE_PROPERTIES": {d: c for d, c in per_device.items() if c},
                    "ENABLE_STARTUP_FALLBACK": False, "PERFORMANCE_HINT": "LATENCY"}
        try:
            supported = set(core.get_property(device, "SUPPORTED_PROPERTIES"))
        except Exception:
            supported = set()
        config: dict[str, Any] = {}
        if "INFERENCE_PRECISION_HINT" in supported and self.precision:
            config["INFERENCE_PRECISION_HINT"] = self.precision
        if self.threads and "INFERENCE_NUM_THREADS" in supported:
            config["INFERENCE_NUM_THREADS"] = int(self.threads)
        if "PERFORMANCE_HINT" in supported:
            config["PERFORMANCE_HINT"] = "LATENCY"
        return config

    @staticmethod
    def _spec(port: Any, quant: tuple[float, int] | None) -> TensorSpec:
        ps = port.get_partial_shape()
        shape = [d.get_length() if d.is_static else None for d in ps]
        ov_type = port.get_element_type().get_type_name()
        dtype = _OV_DTYPES.get(ov_type, ov_type)
        try:
            name = port.get_any_name()
        except RuntimeError:
            name = port.get_node().get_friendly_name()
        is_int = dtype in ("int8", "uint8", "int16")
        return TensorSpec(name=name, shape=shape, dtype=dtype,
                          scale=quant[0] if quant and is_int else None,
                          zero_point=quant[1] if quant and is_int else None)

    def _quant_fixup(self) -> None:
        """Integer I/O needs scale/zero point; take them from the embedded metadata if the flatbuffer had none."""
        for attr, key in (("input_spec", "input"), ("output_spec", "output")):
            spec = getattr(self, attr)
            if spec.dtype not in ("int8", "uint8", "int16") or spec.scale is not None:
                continue
            meta = self.read_meta()
            other = getattr(meta, key, None) if meta else None
            if other is None or other.scale is None:
                raise EdgeproofError(
                    f"'{self.path.name}' has {spec.dtype} {key} but its quantization scale is unknown to "
                    "OpenVINO; install ai-edge-litert (pip install ai-edge-litert) so it can be read")
            spec.scale, spec.zero_point = float(other.scale), int(other.zero_point or 0)

    def _placement(self) -> dict[str, Any]:
        """Executed layers and the device(s) the compiled model runs on (EXECUTION_DEVICES)."""
        try:
            devices = [str(d) for d in self._compiled.get_property("EXECUTION_DEVICES")]
        except Exception:
            devices = [self.device]
        layers = 0
        try:
            for op in self._compiled.get_runtime_model().get_ops():
                info = op.get_rt_info()
                kind = info["layerType"].astype(str) if "layerType" in info else op.get_type_name()
                layers += kind not in _NOT_LAYERS
        except Exception:
            layers = self.model_ops
        on_cpu = all(d.split(".")[0] == "CPU" for d in devices)
        mixed = len({d.split(".")[0] for d in devices}) > 1
        precision = self.precision if self.device == "AUTO" else None
        try:
            value = self._compiled.get_property("INFERENCE_PRECISION_HINT")
            precision = value.get_type_name() if hasattr(value, "get_type_name") else str(value)
        except Exception:
            pass
        accel = 0 if on_cpu or mixed else layers
        where = f"OpenVINO {', '.join(devices)}: {layers} layers ({self.model_ops} model ops)"
        if mixed:
            where += "; per-layer split across devices is not reported by OpenVINO"
        if self.device != self.requested_device:
            where += f" (FALLBACK from {self.requested_device})"
        return {"accelerator": None if mixed else accel, "cpu": None if mixed else layers - accel,
                "total": layers, "where": where, "runtime": f"openvino {self._ov.__version__.split('-')[0]}",
                "devices": devices, "requested_device": self.requested_device,
                "fallback": self.device != self.requested_device, "precision": precision,
                "model_ops": self.model_ops}

    # ---- running -------------------------------------------------------------------------
    def run(self, x: np.ndarray) -> np.ndarray:
        self._request.infer({0: x})
        return self._request.get_output_tensor(0).data.copy()

    def close(self) -> None:
        self._request = None
        self._compiled = None


_ABSL_LINE = re.compile(r"^[EWIF]\d{4} |^WARNING: All log messages before absl::InitializeLog")


def _quiet_frontends():
    """read_model tries every frontend on a file its own one rejects; the TensorFlow one logs each failed
    text-format parse straight to fd 2 ('E0000 ... text_format.cc ...'). Drop those absl lines."""
    from edgeproof.stderr_filter import filtered_stderr

    return filtered_stderr(lambda line: not _ABSL_LINE.match(line))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    # OpenVINO prefixes the message with "Exception from src/...cpp:N:" / "Check '...' failed" lines.
    lines = [ln.strip() for ln in text.splitlines()
             if ln.strip() and not ln.strip().startswith(("Check '", "Exception from "))]
    return (lines[0] if lines else text.splitlines()[0] if text else type(exc).__name__)[:300]
