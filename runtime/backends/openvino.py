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
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgeproof.contract import TensorSpec
from edgeproof.errors import EdgeproofError, UsageError, require
from edgeproof.runtime.backends.base import Backend, warn
from edgeproof.runtime.backends.openvino_compile import batch_of_one, compile_on_cpu, shared_core
from edgeproof.runtime.backends.tflite_interpreter import io_quantization

DEVICE_RE = re.compile(r"^(CPU|GPU|NPU|AUTO)(\.\d+)?$")
DEVICE_INSTALL = {
    "GPU": "sudo apt install intel-opencl-icd and add your user to the 'render' group (Intel GPU compute runtime)",
    "NPU": "install the Intel NPU driver (github.com/intel/linux-npu-driver) and add your user to 'render'",
}
_OV_DTYPES = {"f32": "float32", "f16": "float16", "bf16": "bfloat16", "f64": "float64", "i8": "int8",
              "u8": "uint8", "i16": "int16", "i32": "int32", "i64": "int64", "boolean": "bool"}
_NOT_LAYERS = {"Input", "Output", "Const", "Parameter", "Result", "Constant"}
class OpenVINOBackend(Backend):
    name = "openvino"
    takes = frozenset({"providers"})  # one OpenVINO device
    providers_label = "OpenVINO device"
    cpu_label = "OpenVINO CPU"
    # Tests swap in a fake Core (e.g. one that lists a GPU that fails to compile); None: shared_core(openvino).
    core_factory: Any = None

    def __init__(self, *args: Any, precision: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.precision = precision or os.environ.get("EDGEPROOF_OPENVINO_PRECISION") or "f32"
        devices = [p for p in self.providers if p]
        why = self.check_profile([], devices, {})
        if why:
            raise UsageError(f"{why} (e.g. --device intel-gpu)")
        self.device = devices[0] if devices else "CPU"
        self.requested_device = self.device

    # ---- device profiles, host checks, bench, inspect ----------------------------------------
    @classmethod
    def check_profile(cls, delegates, providers, provider_options) -> str | None:
        if providers and (len(providers) != 1 or not DEVICE_RE.match(providers[0])):
            return (f"for backend 'openvino', providers is one OpenVINO device (CPU, GPU, GPU.1, NPU or AUTO), "
                    f"got {providers}")
        return super().check_profile(delegates, providers, provider_options)

    @staticmethod
    def device_of(profile) -> str:
        return profile.providers[0] if profile.providers else "CPU"

    @classmethod
    def profile_accelerator(cls, profile) -> str:
        dev = cls.device_of(profile)
        return "" if dev == "CPU" else f"OpenVINO {dev}"

    @classmethod
    def profile_facts(cls, profile) -> dict[str, Any]:
        return {"openvino_device": cls.device_of(profile)}

    @classmethod
    def host_checks(cls, profile, facts, loader=None) -> list[tuple[bool, str]]:
        dev = cls.device_of(profile)
        if not facts.openvino_version:
            return [(False, "openvino is not installed")]
        if dev == "AUTO":
            return []
        have = facts.openvino_devices
        ok = dev in have or (dev.split(".")[0] == dev and any(d.split(".")[0] == dev for d in have))
        return [(ok, f"OpenVINO device {dev} {'available' if ok else 'not available'} "
                     f"(OpenVINO lists: {', '.join(have) or 'none'})")]

    @classmethod
    def bare_loop(cls, path, threads, x, model=None):
        """OpenVINO compile_model on CPU: InferRequest.infer.

        Compiled with the same properties edgeproof uses (threads, PERFORMANCE_HINT=LATENCY and the
        inference precision, f32 by default; OpenVINO's own default on bf16-capable CPUs is bf16), so
        the ratio measures the wrapper, not a precision change. Quantized inputs take the scale and
        zero point from the loaded edgeproof model (OpenVINO does not expose them).
        """
        from edgeproof.runtime.backends.bare_loop import Baseline, native_input, quantizing_loop, to_layout

        t0 = time.perf_counter()
        import openvino as ov

        core = shared_core(ov)
        precision = getattr(getattr(model, "backend", None), "precision", None) or "f32"
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        compiled, _ = compile_on_cpu(core, core.read_model(str(path)), config)
        req = compiled.create_infer_request()
        load_s = time.perf_counter() - t0
        try:  # what the plugin really compiled with, as the record says (not just what was asked)
            value = compiled.get_property("INFERENCE_PRECISION_HINT")
            precision = value.get_type_name() if hasattr(value, "get_type_name") else str(value)
        except RuntimeError:  # a device without the property: the record keeps the requested one
            pass
        port = compiled.input(0)
        et = np.dtype(port.get_element_type().to_dtype())
        dims = [d.get_length() if d.is_static else None for d in port.get_partial_shape()]
        xf = to_layout(x, dims)

        def run(arr):
            req.infer({0: arr})
            return req.get_output_tensor(0).data

        spec, ospec = getattr(model, "input_spec", None), getattr(model, "output_spec", None)
        if et.name in ("int8", "uint8"):
            if spec is None or not spec.scale:
                raise UsageError("OpenVINO baseline: the model's int8 input scale is unknown")
            native = TensorSpec(spec.name, dims, et.name, spec.scale, spec.zero_point)
        else:
            native = TensorSpec("input", dims, et.name)
        xin = native_input(xf, native)
        return Baseline("openvino infer()", lambda: run(xin), load_s, {"precision": precision},
                        call_user=quantizing_loop(run, xf, native, ospec))

    @classmethod
    def trial(cls):
        """What runtime.guard runs in a child first: OpenVINO's CPU plugin can SIGSEGV on a valid file (the zoo's
        NASNetMobile onnx-int8 QDQ graph killed convert and `edgeproof run` with it)."""
        import openvino as ov

        from edgeproof.runtime import guard

        return guard.Trial(cls.name, "OpenVINO", ov.__version__.split("-")[0], OPENVINO_TRIAL)

    @classmethod
    def inspect_load(cls, path, report) -> None:
        import openvino as ov

        from edgeproof.formats import family_of
        from edgeproof.runtime.guard import guarded_load

        guarded_load(path, cls.trial(), family_of(Path(path)), None, None)
        core = shared_core(ov)
        with _quiet_frontends():
            model = core.read_model(str(path))
        compile_on_cpu(core, model, {})

    # ---- loading -------------------------------------------------------------------------
    def load(self) -> None:
        ov = require("openvino", "openvino", "the openvino backend")
        self._ov = ov
        core = self.core_factory() if self.core_factory else shared_core(ov)
        try:
            with _quiet_frontends():
                model = core.read_model(str(self.path))
        except Exception as exc:  # noqa: BLE001 - any reader error: an invalid-model error naming it
            from edgeproof.formats import family_of
            from edgeproof.runtime.model_check import invalid

            raise invalid(self.path, family_of(self.path), f"OpenVINO {ov.__version__.split('-')[0]} cannot read "
                          f"it ({_first_line(exc)})") from None
        from edgeproof.runtime.output_check import check_io_counts

        # 0 or 2 inputs is bad input (UsageError, as on every backend): the fuzz test's header damage made a
        # 0-input ONNX graph that reached the user as a bare EdgeproofError
        check_io_counts(self.path, [_port_name(p, "input", i) for i, p in enumerate(model.inputs)],
                        [_port_name(p, "output", i) for i, p in enumerate(model.outputs)])
        self._guarded_trial(model)
        self._check_device(core)
        if self.device.startswith("NPU"):
            batch_of_one(model)  # the NPU compiles static shapes only (Model loops over items)
        compiled = None
        try:
            if self.device != "CPU":
                compiled = core.compile_model(model, self.device, self._config(core, self.device))
        except RuntimeError as exc:  # OpenVINO's compile errors (its C++ exceptions)
            self._device_failed(f"compiling '{self.path.name}' for {self.device} failed: {_first_line(exc)}")
        if compiled is None:
            compiled = self._compile_on_cpu(core, model)
        self._compiled = compiled
        self._request = compiled.create_infer_request()
        self.model_ops = sum(1 for op in model.get_ops() if op.get_type_name() not in _NOT_LAYERS)
        quant = io_quantization(self.path) if self.path.suffix.lower() == ".tflite" else {}
        self.input_spec = self._spec(model.inputs[0], quant.get(0))
        self.output_spec = self._spec(model.outputs[0], quant.get(1))
        self._quant_fixup()
        self.batch_ok = compiled.inputs[0].get_partial_shape()[0].is_dynamic
        self.placement = self._placement()

    def _compile_on_cpu(self, core: Any, model: Any) -> Any:
        try:
            compiled, forced = compile_on_cpu(core, model, self._config(core, "CPU"))
        except RuntimeError as exc:
            raise UsageError(f"OpenVINO cannot compile '{self.path.name}' for CPU: {_first_line(exc)}; the file "
                             "may be damaged, or use another backend") from None
        if forced is not None:
            warn(f"OpenVINO {self._ov.__version__.split('-')[0]} cannot compile '{self.path.name}' with a dynamic "
                 f"batch ({_first_line(forced)[:160]}); compiled it for batch 1, so a batch runs one image at a time")
        return compiled

    def _guarded_trial(self, model: Any) -> None:
        """Compile and run the file once on zeros in a child (cached by sha256): a crash there is one line here."""
        from edgeproof.formats import family_of
        from edgeproof.runtime.guard import guarded_load

        ps = model.inputs[0].get_partial_shape()
        shape = [d.get_length() if d.is_static else 1 for d in ps] if ps.rank.is_static else None
        dtype = {"u8": "uint8", "i8": "int8", "i16": "int16"}.get(model.inputs[0].get_element_type().get_type_name(),
                                                                  "float32")
        guarded_load(self.path, self.trial(), family_of(self.path), self.verified_sha256, shape, dtype)

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
        except RuntimeError as exc:  # a plugin that cannot list them: compile with the device's defaults
            self.degrade(f"{device} did not list its SUPPORTED_PROPERTIES, so threads/precision/latency hints "
                         "were not set", exc)
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
        except RuntimeError as exc:
            self.degrade(f"EXECUTION_DEVICES unreadable: placement names the requested device {self.device}, "
                         "not the one that runs", exc)
            devices = [self.device]
        layers = 0
        try:
            for op in self._compiled.get_runtime_model().get_ops():
                info = op.get_rt_info()
                kind = info["layerType"].astype(str) if "layerType" in info else op.get_type_name()
                layers += kind not in _NOT_LAYERS
        except RuntimeError as exc:
            self.degrade("the compiled runtime model is unreadable: layers counted from the source model", exc)
            layers = self.model_ops
        on_cpu = all(d.split(".")[0] == "CPU" for d in devices)
        mixed = len({d.split(".")[0] for d in devices}) > 1
        precision = self.precision if self.device == "AUTO" else None
        try:
            value = self._compiled.get_property("INFERENCE_PRECISION_HINT")
            precision = value.get_type_name() if hasattr(value, "get_type_name") else str(value)
        except RuntimeError:  # a device without the hint (NPU, some GPUs): the precision is the device's own
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


OPENVINO_TRIAL = """
import json, sys
import numpy as np
import openvino as ov
from edgeproof.runtime.backends.openvino_compile import compile_on_cpu
core = ov.Core()
compiled, _ = compile_on_cpu(core, core.read_model(sys.argv[1]), {"INFERENCE_NUM_THREADS": 1})
shape, dtype = json.loads(sys.argv[2])
if shape:
    compiled(np.zeros(shape, dtype))
"""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    # OpenVINO prefixes the message with "Exception from src/...cpp:N:" / "Check '...' failed" lines.
    lines = [ln.strip() for ln in text.splitlines()
             if ln.strip() and not ln.strip().startswith(("Check '", "Exception from "))]
    return (lines[0] if lines else text.splitlines()[0] if text else type(exc).__name__)[:300]


def _port_name(port: Any, what: str, i: int) -> str:
    try:
        return str(port.get_any_name())
    except Exception:  # noqa: BLE001 - an unnamed port (a damaged or hand-made graph)
        return f"{what} {i}"
