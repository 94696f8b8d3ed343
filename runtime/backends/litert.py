"""TFLite backend (the Interpreter API): ai-edge-litert, else tflite-runtime, else tensorflow.lite (slow; warned).

Delegates (e.g. libedgetpu.so.1) load through `load_delegate`; one that fails is an error naming
the library and its install line, or -- only with allow_fallback -- a loud warning and CPU.
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from edgeproof.errors import EdgeproofError
from edgeproof.runtime.backends.base import Backend, BatchUnsupported, warn
from edgeproof.runtime.backends.tflite_interpreter import import_interpreter, quiet_runtime_info, tensor_spec

__all__ = ["DELEGATE_INSTALL", "LiteRTBackend", "delegate_install_line", "import_interpreter", "quiet_runtime_info",
           "tensor_spec"]
EDGETPU_LIBRARY = "libedgetpu.so.1"

DELEGATE_INSTALL = {
    "edgetpu": "Coral Edge TPU runtime: sudo apt-get install libedgetpu1-std  (see https://coral.ai/software/)",
    "gpu": "build/install the TFLite GPU delegate (libtensorflowlite_gpu_delegate.so) for this platform",
    "hexagon": "install the Qualcomm Hexagon delegate (libhexagon_interface.so) from the Hexagon SDK",
}


def delegate_install_line(library: str, hint: str | None) -> str:
    if hint:
        return hint
    for key, line in DELEGATE_INSTALL.items():
        if key in library.lower():
            return line
    return f"install the library that provides '{library}' and make it findable (LD_LIBRARY_PATH)"


class LiteRTBackend(Backend):
    name = "litert"
    takes = frozenset({"delegates"})

    @classmethod
    def profile_accelerator(cls, profile: Any) -> str:
        return ", ".join(profile.delegates)

    @classmethod
    def host_checks(cls, profile: Any, facts: Any, loader: Any = None) -> list[tuple[bool, str]]:
        """Each delegate library must load (the Edge TPU one as host detection already probed it)."""
        checks = []
        for lib in profile.delegates:
            if lib == EDGETPU_LIBRARY:
                ok, detail = facts.edgetpu_loadable, facts.edgetpu_detail
            else:
                try:
                    (loader or ctypes.CDLL)(lib)
                    ok, detail = True, f"{lib} loaded"
                except OSError as exc:
                    ok, detail = False, str(exc)
            checks.append((ok, f"delegate {lib} loads" if ok else f"delegate {lib} does not load: {detail}"))
        return checks

    @classmethod
    def bare_loop(cls, path, threads, x, model=None):
        """ai_edge_litert Interpreter: set_tensor / invoke / get_tensor."""
        from edgeproof.runtime.backends.bare_loop import Baseline, native_input, quantizing_loop

        t0 = time.perf_counter()
        from ai_edge_litert.interpreter import Interpreter

        interp = Interpreter(model_path=str(path), num_threads=threads)
        inp = interp.get_input_details()[0]
        if tuple(inp["shape"]) != tuple(x.shape):
            interp.resize_tensor_input(inp["index"], list(x.shape))
        interp.allocate_tensors()
        inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
        load_s = time.perf_counter() - t0
        in_q, out_q = tensor_spec(inp), tensor_spec(out)
        in_idx, out_idx = inp["index"], out["index"]

        def run(arr):
            interp.set_tensor(in_idx, arr)
            interp.invoke()
            return interp.get_tensor(out_idx)

        xin = native_input(x, in_q)
        return Baseline("litert invoke()", lambda: run(xin), load_s, {"input_dtype": in_q.dtype},
                        call_user=quantizing_loop(run, x, in_q, out_q))

    @classmethod
    def inspect_load(cls, path, report) -> None:
        Interpreter = import_interpreter()[0]
        with quiet_runtime_info():
            Interpreter(model_path=str(path)).allocate_tensors()

    def load(self) -> None:
        Interpreter, load_delegate, self.runtime = import_interpreter()
        loaded = []
        for lib in self.delegates:
            try:
                # dlopen first: a failed load_delegate leaves a half-built Delegate whose __del__ spews.
                ctypes.CDLL(lib)
                loaded.append(load_delegate(lib))
            except (ValueError, OSError, RuntimeError) as exc:
                self._delegate_failed(lib, str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        self.loaded_delegates = [lib for lib, _ in zip(self.delegates, loaded)] if loaded else []
        kwargs = {"num_threads": self.threads} if self.threads else {}
        with quiet_runtime_info():  # the runtime's 'INFO: Created TensorFlow Lite XNNPACK delegate' line
            try:
                it = Interpreter(model_path=str(self.path), experimental_delegates=loaded or None, **kwargs)
                n_user = self._node_count(it)  # nodes after the user delegates, before XNNPACK (applied at allocate)
                it.allocate_tensors()
            except (ValueError, RuntimeError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                if "Select TensorFlow op" in str(exc) or "Flex" in first:
                    from edgeproof.errors import UsageError

                    raise UsageError(
                        f"'{self.path.name}' uses TensorFlow (Flex, SELECT_TF_OPS) ops, which {self.runtime} cannot "
                        "run without the Flex delegate; convert it with builtin ops only ('edgeproof convert' does)"
                    ) from None
                if "edgetpu-custom-op" in str(exc):
                    raise EdgeproofError(
                        f"'{self.path.name}' is compiled for the Edge TPU and needs the libedgetpu delegate "
                        f"(run with --device coral, or delegates=['libedgetpu.so.1']); "
                        f"{delegate_install_line('edgetpu', self.install_hint)}") from None
                if loaded:
                    self._delegate_failed(", ".join(self.delegates), first)
                    self.delegates, self.loaded_delegates, loaded = [], [], []
                    it = Interpreter(model_path=str(self.path), **kwargs)
                    n_user = self._node_count(it)
                    it.allocate_tensors()
                else:
                    from edgeproof.runtime.model_check import invalid

                    raise invalid(self.path, "tflite", f"{self.runtime} cannot load it ({first})") from None
        from edgeproof.runtime.output_check import check_io_counts

        check_io_counts(self.path, [d["name"] for d in it.get_input_details()],
                        [d["name"] for d in it.get_output_details()])
        self._it = it
        self._views: tuple[np.ndarray, np.ndarray] | None = None  # see run_bytes
        self._in = it.get_input_details()[0]
        self._out = it.get_output_details()[0]
        self.input_spec, self.output_spec = tensor_spec(self._in), tensor_spec(self._out)
        self._in_index, self._out_index = self._in["index"], self._out["index"]
        self._outputs = it.get_output_details()
        self._shape = tuple(int(v) for v in self._in["shape"])
        self.batch_ok = True  # resize_tensor_input; run() turns it off when the model refuses
        self._set, self._invoke, self._get = it.set_tensor, it.invoke, it.get_tensor
        self._raw_calls = self.runtime == "ai-edge-litert" and hasattr(getattr(it, "_interpreter", None), "Invoke")
        self.placement = self._placement(n_user)
        if self.loaded_delegates and self.placement and self.placement["accelerator"] == 0:
            warn(f"delegate {', '.join(self.loaded_delegates)} loaded but took 0 of {self.placement['total']} nodes: "
                  f"'{self.path.name}' runs on the CPU (for the Edge TPU, compile it with edgetpu_compiler first)")

    def _delegate_failed(self, lib: str, why: str) -> None:
        line = delegate_install_line(lib, self.install_hint)
        self._accelerator_unavailable("DELEGATE", [lib], f"TFLite delegate '{lib}' failed to load ({why}); "
                                      f"install it: {line}")

    @staticmethod
    def _node_count(it) -> int | None:
        try:
            return int(it._interpreter.NumNodes())
        except AttributeError:  # private API absent in some runtime versions: _placement() says so
            return None

    def _placement(self, n_user: int | None) -> dict[str, Any] | None:
        """Original nodes replaced by user delegates (accelerator) vs the rest, from the node list."""
        try:
            raw = self._it._interpreter
            names = [raw.NodeName(i) for i in range(raw.NumNodes())]
            first_delegate = next((i for i, n in enumerate(names) if n == "DELEGATE"), len(names))
            producer = {}
            for i in range(first_delegate):
                for t in raw.NodeOutputs(i):
                    producer[int(t)] = i
            covered: dict[int, set[int]] = {}
            for d in range(first_delegate, len(names)):
                stop = {int(t) for t in raw.NodeInputs(d)}
                seen: set[int] = set()
                stack = [int(t) for t in raw.NodeOutputs(d)]
                while stack:
                    p = producer.get(stack.pop())
                    if p is None or p in seen:
                        continue
                    seen.add(p)
                    stack.extend(int(t) for t in raw.NodeInputs(p) if int(t) >= 0 and int(t) not in stop)
                covered[d] = seen
        except (AttributeError, RuntimeError, ValueError) as exc:  # the private node API of this LiteRT
            self.degrade("the interpreter's node list is unreadable, so where the ops run is unknown", exc)
            return None
        total = first_delegate
        user_end = n_user if n_user is not None else first_delegate
        accel = set().union(*(s for d, s in covered.items() if d < user_end)) if self.loaded_delegates else set()
        xnn = set().union(*(s for d, s in covered.items() if d >= user_end)) if covered else set()
        xnn -= accel
        where = (f"{len(accel)}/{total} nodes on {', '.join(self.loaded_delegates)}" if self.loaded_delegates
                 else "cpu")
        if xnn:
            where += f"; {len(xnn)}/{total} on XNNPACK (CPU)"
        failed = list(self.failed_accelerators)
        if failed:  # --allow-fallback: the summary must say the accelerator was NOT used
            where += f" (FALLBACK: {', '.join(failed)} not loaded)"
        return {"accelerator": len(accel), "cpu": total - len(accel), "total": total, "where": where,
                "runtime": self.runtime, "delegates": list(self.loaded_delegates), "xnnpack": len(xnn),
                "fallback": bool(failed), "failed_delegates": failed}

    def _resize(self, shape: tuple[int, ...]) -> None:
        self._views = None  # allocate_tensors moves the buffers: a kept view would point at freed memory
        try:
            self._it.resize_tensor_input(self._in_index, list(shape))
            self._it.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            try:  # put the interpreter back the way it was
                self._it.resize_tensor_input(self._in_index, list(self._shape))
                self._it.allocate_tensors()
            except (ValueError, RuntimeError):
                pass
            if shape[0] != self._shape[0] and shape[1:] == self._shape[1:]:
                self.batch_ok = False
                raise BatchUnsupported(str(exc)) from None
            raise EdgeproofError(f"'{self.path.name}' cannot take input of shape {shape}: {exc}") from None
        self._shape = shape

    def output_names(self) -> list[str]:
        return [d["name"] for d in self._outputs]

    def select_output(self, name: str) -> bool:
        out = next((d for d in self._outputs if d["name"] == name), None)
        if out is None:
            return False
        self._out, self._out_index, self.output_spec = out, out["index"], tensor_spec(out)
        self._views = None
        return True

    def run(self, x: np.ndarray) -> np.ndarray:
        if x.shape != self._shape:
            self._resize(x.shape)
        if self._raw_calls:
            # ai-edge-litert's own wrapper methods, without Interpreter.invoke's _ensure_safe() refcount check
            # (it guards numpy views from tensor(), which this backend never takes): ~1.5 us less per call.
            raw = self._it._interpreter  # looked up per call: a stored reference would make _ensure_safe fail
            raw.SetTensor(self._in_index, x)
            raw.Invoke()
            return raw.GetTensor(self._out_index, 0)
        self._set(self._in_index, x)
        self._invoke()
        return self._get(self._out_index)

    def run_bytes(self, shape: tuple[int, ...], fill: Callable[[np.ndarray], Any]) -> np.ndarray:
        """fill() writes straight into the interpreter's input tensor and the output is read from its own
        tensor: tensor() views, taken once per shape and dropped where allocate_tensors moves the buffers
        (_resize). set_tensor's and get_tensor's copies are saved. Only with the raw calls: the wrapper's
        invoke() refuses to run while such a view exists."""
        if shape != self._shape or not self._raw_calls:
            return super().run_bytes(shape, fill)
        if self._views is None:
            self._views = (self._it.tensor(self._in_index)().view(np.uint8), self._it.tensor(self._out_index)())
        fill(self._views[0])
        self._it._interpreter.Invoke()
        return self._views[1]

    def close(self) -> None:
        self._set = self._invoke = self._get = None
        self._views = None
        self._it = None
