"""LiteRT CompiledModel backend (ai-edge-litert 2.x): Google's recommended path to GPU and NPU acceleration.

The accelerators come from `providers` (a device profile or --provider): any of NPU, GPU and CPU,
combined into LiteRT's HardwareAccelerator set; default CPU. With CPU in the set, ops the accelerator
lacks run on the CPU (placement says "partly"); without it every op must be accelerated.

Never a silent CPU fallback: asking for a GPU or NPU this host does not have is an error that says why
(no WebGPU adapter, no Vulkan loader, the vendor's NPU dispatch library missing), or -- only with
allow_fallback -- a loud warning and the CPU. LiteRT prints dozens of native INFO/WARNING lines while
it builds its environment; they are kept off the terminal and read only to name such a failure.
"""

from __future__ import annotations

import ctypes
import importlib.util
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgeproof.contract import TensorSpec
from edgeproof.errors import EdgeproofError, MissingDependency, UnsupportedModel, UsageError
from edgeproof.runtime.backends.base import Backend, BatchUnsupported
from edgeproof.runtime.backends.tflite_interpreter import bare_interpreter, tensor_spec

ACCELERATORS = ("NPU", "GPU", "CPU")
# what ai_edge_litert.TensorBuffer writes and reads; an int16x8 file's int16 I/O is not among them
BUFFER_DTYPES = ("float32", "float16", "int32", "int8", "uint8", "bool")
VULKAN_LIBRARY = "libvulkan.so.1"  # LiteRT's GPU accelerator is WebGPU (Dawn), on Vulkan under Linux
INSTALL = {
    "GPU": "install the GPU's Vulkan driver and loader (Debian/Ubuntu: sudo apt-get install libvulkan1 "
           "mesa-vulkan-drivers, or the vendor's driver)",
    "NPU": "install the NPU vendor's LiteRT dispatch library and runtime (Qualcomm QNN, MediaTek NeuroPilot, "
           "Google Tensor, Intel OpenVINO); see ai.google.dev/edge/litert/next/npu",
}
# The guarded trial (runtime.guard) runs this backend's own load path in a child first (litert_compiled_trial):
# the fuzz test's damaged .tflite files SIGSEGV CompiledModel where the Interpreter raises cleanly.
_LOCATION = re.compile(r"^(?:└\s*)?(?:ERROR|WARNING|INFO):\s*\[[^\]]*\]\s*")


class LiteRTCompiledBackend(Backend):
    name = "litert-compiled"
    takes = frozenset({"providers"})  # the LiteRT accelerators, in any order
    providers_label = "LiteRT accelerators"

    # ---- device profiles, host checks, bench -------------------------------------------------
    @classmethod
    def check_profile(cls, delegates, providers, provider_options) -> str | None:
        if any(p not in ACCELERATORS for p in providers) or len(set(providers)) != len(providers):
            return (f"for backend 'litert-compiled', providers are LiteRT accelerators ({', '.join(ACCELERATORS)}, "
                    f"each once), got {providers}")
        return super().check_profile(delegates, providers, provider_options)

    @classmethod
    def profile_accelerator(cls, profile) -> str:
        return " + ".join(f"LiteRT {a}" for a in profile.providers if a != "CPU")

    @classmethod
    def host_checks(cls, profile, facts, loader=None) -> list[tuple[bool, str]]:
        load_lib = loader or ctypes.CDLL
        spec = importlib.util.find_spec("ai_edge_litert")
        checks = [(spec is not None, "ai-edge-litert installed" if spec else "ai-edge-litert is not installed "
                                                                               "(pip install ai-edge-litert)")]
        if "GPU" in profile.providers:
            ok, detail = _loads(load_lib, VULKAN_LIBRARY)
            checks.append((ok, f"LiteRT GPU: {VULKAN_LIBRARY} loads (a WebGPU adapter still needs a GPU driver)" if ok
                           else f"LiteRT GPU needs a WebGPU adapter: {VULKAN_LIBRARY} does not load ({detail})"))
        if "NPU" in profile.providers:
            why = _npu_missing(load_lib)
            checks.append((why is None, "LiteRT NPU: a vendor dispatch library loads" if why is None
                           else f"LiteRT NPU: {why}"))
        return checks

    @classmethod
    def trial(cls, threads: int | None = None, accelerators: tuple[str, ...] | list[str] = ("CPU",),
              allow_fallback: bool = False):
        """The guarded child: this backend's load with exactly these options (the cache key names them)."""
        import ai_edge_litert

        from edgeproof.runtime.backends.litert_compiled_trial import code_for
        from edgeproof.runtime.guard import FLAKY_AGREE, Trial

        key = f"{cls.name}-t{int(threads or 0)}-{'+'.join(accelerators)}{'-fallback' if allow_fallback else ''}"
        return Trial(key, "LiteRT CompiledModel", getattr(ai_edge_litert, "__version__", "?"),
                     code_for(threads, list(accelerators), allow_fallback), agree=FLAKY_AGREE)

    @classmethod
    def inspect_load(cls, path, report) -> None:
        """The guarded child compiles and runs it (its verdict is the answer): inspect builds no CompiledModel
        in its own process (a full-suite run segfaulted there once)."""
        from edgeproof.runtime.guard import guarded_load

        guarded_load(path, cls.trial(), "tflite", None, None)

    @classmethod
    def bare_loop(cls, path, threads, x, model=None):
        """CompiledModel.from_file on the CPU: TensorBuffer.write / run_by_index / read (the documented loop)."""
        from edgeproof.runtime.backends.bare_loop import Baseline, native_input, quantizing_loop

        t0 = time.perf_counter()
        from ai_edge_litert.compiled_model import CompiledModel
        from ai_edge_litert.hardware_accelerator import HardwareAccelerator
        from ai_edge_litert.options import CpuOptions, Options

        with _native_log():
            cm = CompiledModel.from_file(str(path), options=Options(
                hardware_accelerators=HardwareAccelerator.CPU, cpu_options=CpuOptions(num_threads=threads or 0)))
            ib, ob = cm.create_input_buffers(0), cm.create_output_buffers(0)
        load_s = time.perf_counter() - t0
        out = ob[0].get_tensor_details()
        n, odtype = int(np.prod(out["shape"])), np.dtype(out["dtype"])
        in_q, out_q = _quant_specs(path, model)

        def run1(arr):
            ib[0].write(arr)
            cm.run_by_index(0, ib, ob)
            return ob[0].read(n, odtype)

        def run(arr):  # a batch one image per call, as the backend runs it
            return run1(arr) if len(arr) == 1 else np.concatenate([run1(arr[i:i + 1]) for i in range(len(arr))])

        xin = native_input(x, in_q)
        return Baseline("litert CompiledModel run_by_index()", lambda: run(xin), load_s, {"input_dtype": in_q.dtype},
                        call_user=quantizing_loop(run, x, in_q, out_q))

    # ---- loading -------------------------------------------------------------------------
    def load(self) -> None:
        try:
            import ai_edge_litert  # noqa: F401 - the missing extra is named before any trial
        except ImportError:
            raise MissingDependency("ai-edge-litert", None, "the litert-compiled backend (LiteRT 2.x)") from None
        why = self.check_profile([], self.providers, {})
        if why:
            raise UsageError(why)
        from edgeproof.runtime.guard import guarded_load

        guarded_load(self.path, self.trial(self.threads, list(self.providers or ["CPU"]), self.allow_fallback),
                     "tflite", self.verified_sha256, None)
        self.load_unguarded()

    def load_unguarded(self) -> None:
        """load() after its guarded trial; the trial's child calls exactly this (litert_compiled_trial)."""
        import ai_edge_litert
        from ai_edge_litert.compiled_model import CompiledModel
        from ai_edge_litert.hardware_accelerator import HardwareAccelerator
        from ai_edge_litert.options import CpuOptions, Options

        self.runtime = f"ai-edge-litert {getattr(ai_edge_litert, '__version__', '')}".strip()
        self.requested = list(self.providers or ["CPU"])

        def compile_for(names: list[str]) -> tuple[Any, str | None]:
            """(CompiledModel, None) or (None, why); LiteRT's native log stays off the terminal."""
            accel = HardwareAccelerator[names[0]]
            for n in names[1:]:
                accel |= HardwareAccelerator[n]
            opts = Options(hardware_accelerators=accel, cpu_options=CpuOptions(num_threads=int(self.threads or 0)))
            with _native_log() as lines:
                try:
                    return CompiledModel.from_file(str(self.path), options=opts), None
                except Exception as exc:  # noqa: BLE001 - read the reason (and free the failed environment) in here
                    why = str(exc) or type(exc).__name__
            return None, _reason(why, lines)

        self.active = list(self.requested)
        wanted = [a for a in self.active if a != "CPU"]
        missing = _npu_missing() if "NPU" in wanted else None  # LiteRT itself would run NPU+CPU on the CPU alone
        cm, why = (None, missing) if missing else compile_for(self.active)
        if cm is None:
            if not wanted:  # the CPU itself cannot compile it: the file is the problem
                from edgeproof.runtime.model_check import invalid

                raise invalid(self.path, "tflite", f"LiteRT CompiledModel cannot load it ({why})")
            line = self.install_hint or "; ".join(INSTALL[a] for a in wanted)
            self._accelerator_unavailable("ACCELERATOR", wanted, f"LiteRT {'+'.join(wanted)} is not available "
                                          f"({why}); install: {line}")
            self.active = ["CPU"]
            cm, why = compile_for(self.active)
            if cm is None:
                from edgeproof.runtime.model_check import invalid

                raise invalid(self.path, "tflite", f"LiteRT CompiledModel cannot load it ({why})")
        self._cm, cm = cm, None  # only self holds it: close() frees it under the log capture, even on errors below
        _quiet_exit()
        with _native_log():  # creating the buffers logs the accelerator registry again
            self._read_specs()
            self._make_buffers(tuple(int(d or 1) for d in self.input_spec.shape))
        if not self._out_shape or self._out_shape[0] != self._shape[0]:
            from edgeproof.runtime.model_check import invalid

            raise invalid(self.path, "tflite", f"LiteRT CompiledModel gives an output of shape {list(self._out_shape)} "
                          f"for an input batch of {self._shape[0]}")
        # One image per call (Model loops over a batch): CompiledModel.resize_input_tensor then new buffers
        # aborted the process (SIGABRT in CreateInputBuffers) on some models, e.g. the byom test's.
        self.batch_ok = False
        self.placement = self._placement()

    def _read_specs(self) -> None:
        key = next(iter(self._cm.get_signature_list()))
        ins, outs = self._cm.get_input_tensor_details(key), self._cm.get_output_tensor_details(key)
        from edgeproof.runtime.output_check import check_io_counts

        check_io_counts(self.path, list(ins), list(outs))
        # CompiledModel shows neither the dynamic batch nor the quantization: the interpreter helper reads both.
        it = bare_interpreter(self.path)
        self.input_spec = tensor_spec(it.get_input_details()[0])
        self.output_spec = tensor_spec(it.get_output_details()[0])
        for what, spec in (("input", self.input_spec), ("output", self.output_spec)):
            if np.dtype(spec.dtype).name not in BUFFER_DTYPES:  # TensorBuffer.write/read raise 'Unsupported dtype'
                raise UnsupportedModel(f"'{self.path.name}' has an {np.dtype(spec.dtype).name} {what}, which LiteRT "
                                       f"CompiledModel's tensor buffers cannot hold (they take "
                                       f"{', '.join(BUFFER_DTYPES)}); run it with --backend litert or openvino")
        for what, spec, d in (("input", self.input_spec, next(iter(ins.values()))),
                              ("output", self.output_spec, next(iter(outs.values())))):
            if len(d["shape"]) != len(spec.shape) or any(s is not None and s != int(v)
                                                        for s, v in zip(spec.shape, d["shape"])):
                from edgeproof.runtime.model_check import invalid

                raise invalid(self.path, "tflite", f"LiteRT CompiledModel sees its {what} as {list(d['shape'])} but "
                              f"the interpreter as {spec.shape}")
        try:
            self.total_ops = len(it._get_ops_details())
        except Exception:  # noqa: BLE001 - private API absent in some runtime versions
            self.total_ops = None
        self._out_key = next(iter(outs))

    def _make_buffers(self, shape: tuple[int, ...]) -> None:
        self._ib, self._ob = self._cm.create_input_buffers(0), self._cm.create_output_buffers(0)
        self._in_buf, self._out_buf = self._ib[0], self._ob[0]
        out = self._out_buf.get_tensor_details()
        self._out_shape = tuple(int(d) for d in out["shape"])
        self._n_out, self._out_dtype = int(np.prod(self._out_shape)), np.dtype(out["dtype"])
        self._shape = shape

    def _placement(self) -> dict[str, Any]:
        """Where it runs, from is_fully_accelerated(): every op on the requested accelerator(s), or not."""
        full = bool(self._cm.is_fully_accelerated())
        on = [a for a in self.active if a != "CPU"]
        total = self.total_ops
        if not on:
            where = "cpu (LiteRT CompiledModel, XNNPACK" + ("" if full else "; some ops on the reference kernels") + ")"
            accel, cpu = 0, total
        else:
            where = f"LiteRT {'+'.join(on)}: " + ("every op" if full else "partly; the rest on the CPU")
            accel, cpu = (total, 0) if full else (None, None)
        failed = list(self.failed_accelerators)
        if failed:  # --allow-fallback: the summary must say the accelerator was NOT used
            where += f" (FALLBACK: {', '.join(failed)} not available)"
        return {"accelerator": accel, "cpu": cpu, "total": total, "where": where, "runtime": self.runtime,
                "accelerators": list(self.active), "requested": list(self.requested), "fully_accelerated": full,
                "fallback": bool(failed), "failed_accelerators": failed}

    # ---- running -------------------------------------------------------------------------
    def run(self, x: np.ndarray) -> np.ndarray:
        if x.shape != self._shape:
            if x.shape[1:] == self._shape[1:]:
                raise BatchUnsupported(f"{self.name} runs one image per call")
            raise EdgeproofError(f"'{self.path.name}' cannot take input of shape {x.shape}; it takes {self._shape}")
        self._in_buf.write(x)
        self._cm.run_by_index(0, self._ib, self._ob)
        return self._out_buf.read(self._n_out, self._out_dtype).reshape(self._out_shape)

    def close(self) -> None:
        with _native_log():  # freeing the environment logs a 'DestroyAccelerator' line per accelerator
            self._ib = self._ob = self._in_buf = self._out_buf = None
            if getattr(self, "_cm", None) is not None:
                self._cm.close()
            self._cm = None


def _quant_specs(path: str | Path, model: Any) -> tuple[TensorSpec, TensorSpec]:
    """The first input's/output's TensorSpec (with scale/zero point): the loaded model's, else read again."""
    if model is not None and getattr(model, "input_spec", None) is not None:
        return model.input_spec, model.output_spec
    it = bare_interpreter(path)
    return tensor_spec(it.get_input_details()[0]), tensor_spec(it.get_output_details()[0])


def _loads(loader: Any, lib: str) -> tuple[bool, str]:
    try:
        loader(lib)
    except OSError as exc:
        return False, str(exc).strip()
    return True, ""


def _dispatch_libraries(spec: Any) -> list[Path]:
    """The NPU dispatch libraries ai-edge-litert ships (vendors/*/dispatch/*.so)."""
    roots = list(getattr(spec, "submodule_search_locations", None) or []) if spec else []
    return sorted(p for r in roots for p in Path(r).glob("vendors/*/dispatch/*.so*"))


_EXIT_QUIET: list[bool] = []


def _quiet_exit() -> None:
    """LiteRT frees the environment behind its tensor buffers only at process exit, after Python's last
    line, with one 'INFO: DestroyAccelerator' line per accelerator; point fd 2 away for that moment."""
    if _EXIT_QUIET:
        return
    import atexit
    import os

    def silence() -> None:
        try:
            sys.stderr.flush()
            os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
        except (OSError, ValueError, AttributeError):
            pass

    atexit.register(silence)
    _EXIT_QUIET.append(True)


def _native_log():
    """Keep LiteRT's native log lines off the terminal; the block gets the list of lines it printed."""
    from edgeproof.stderr_filter import filtered_stderr

    class _Lines(list):
        def __enter__(self):
            self._cm = filtered_stderr(self._keep)
            self._cm.__enter__()
            return self

        def __exit__(self, *exc):
            return self._cm.__exit__(*exc)

        def _keep(self, line: str) -> bool:
            self.append(line)
            return False

    return _Lines()


def _npu_missing(loader: Any = None) -> str | None:
    """Why there is no NPU for LiteRT here (None: a vendor dispatch library loads). Checked up front: with
    NPU+CPU and no NPU, LiteRT compiles the whole model for the CPU and says it is fully accelerated."""
    libs = _dispatch_libraries(importlib.util.find_spec("ai_edge_litert"))
    tried = []
    for lib in libs:
        ok, detail = _loads(loader or ctypes.CDLL, str(lib))
        if ok:
            return None
        tried.append(f"{lib.name}: {detail.split(': ', 1)[-1]}")
    return "no NPU: no LiteRT vendor dispatch library loads" + (f" ({'; '.join(tried)})" if tried else "")


def _reason(message: str, lines: list[str]) -> str:
    """The most telling line of LiteRT's error and native log, without its source locations."""
    text = message.splitlines() + list(lines)
    if any("No adapters found" in ln for ln in text):
        vulkan = next((ln.strip() for ln in text if "Couldn't load Vulkan" in ln), None)
        return "no WebGPU adapter found" + (f": {vulkan.split(': ', 1)[-1]}" if vulkan else
                                            " (no GPU, or no GPU driver for Vulkan)")
    if any("Some ops are not accelerated" in ln for ln in text):
        return "some ops are not supported by the accelerator and CPU is not in the accelerator set"
    msgs = [_LOCATION.sub("", ln).strip() for ln in text if ln.lstrip().startswith(("ERROR", "└"))]
    msgs = [m for m in msgs if m and not m.startswith("ERROR")]
    return (msgs[-1] if msgs else (message.strip().splitlines() or ["RuntimeError"])[-1])[:300]
