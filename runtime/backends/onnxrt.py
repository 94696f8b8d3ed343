"""ONNX Runtime backend: an ordered execution-provider list, verified after the session starts.

ONNX Runtime silently drops a provider it cannot create; we check `session.get_providers()` and
make a missing accelerator an error (or, with allow_fallback, a loud warning).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from edgeproof.contract import METADATA_KEY, ArtifactMeta
from edgeproof.errors import require
from edgeproof.runtime.backends.base import Backend
from edgeproof.runtime.backends.onnx_graph import ORT_DTYPES, ort_spec

__all__ = ["CPU", "EP_INSTALL", "ORT_DTYPES", "OnnxRuntimeBackend", "ort_spec"]
CPU = "CPUExecutionProvider"
EP_INSTALL = {
    "CUDAExecutionProvider": "pip install onnxruntime-gpu (plus a matching CUDA/cuDNN)",
    "TensorrtExecutionProvider": "pip install onnxruntime-gpu and install TensorRT",
    "OpenVINOExecutionProvider": "pip install onnxruntime-openvino",
    "CoreMLExecutionProvider": "use the standard onnxruntime wheel on macOS",
    "NnapiExecutionProvider": "build onnxruntime for Android with --use_nnapi",
    "QNNExecutionProvider": "pip install onnxruntime-qnn",
    "DmlExecutionProvider": "pip install onnxruntime-directml",
}


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    takes = frozenset({"providers", "provider_options"})

    @classmethod
    def check_profile(cls, delegates, providers, provider_options) -> str | None:
        bad = [p for p in providers if not p.endswith("ExecutionProvider")]
        if bad:
            return f"ONNX Runtime provider names end in 'ExecutionProvider' (e.g. CUDAExecutionProvider), got {bad}"
        return super().check_profile(delegates, providers, provider_options)

    @staticmethod
    def required_providers(providers: list[str]) -> list[str]:
        """EPs that must be in onnxruntime.get_available_providers() (no silent fallback)."""
        return [p for p in providers if p != CPU]

    @classmethod
    def profile_accelerator(cls, profile) -> str:
        return " -> ".join(cls.required_providers(profile.providers))

    @classmethod
    def profile_facts(cls, profile) -> dict[str, Any]:
        return {"required_providers": cls.required_providers(profile.providers)}

    @classmethod
    def host_checks(cls, profile, facts, loader=None) -> list[tuple[bool, str]]:
        have, checks = facts.ort_providers, []
        for ep in cls.required_providers(profile.providers):
            ok = have is not None and ep in have
            checks.append((ok, f"{ep} {'available' if ok else 'not available'} in onnxruntime"
                               + ("" if ok or have is None else f" (have: {', '.join(have)})")
                               + (" (onnxruntime not installed)" if have is None else "")))
        return checks

    @classmethod
    def bare_loop(cls, path, threads, x, model=None):
        """onnxruntime InferenceSession.run on the CPU execution provider."""
        from edgeproof.runtime.backends.bare_loop import Baseline, to_layout

        t0 = time.perf_counter()
        import onnxruntime as ort

        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(path), so, providers=[CPU], enable_fallback=0)
        load_s = time.perf_counter() - t0
        inp = sess.get_inputs()[0]
        feeds = {inp.name: to_layout(x, inp.shape)}

        def call():
            return sess.run(None, feeds)

        return Baseline("onnxruntime run()", call, load_s)

    @classmethod
    def inspect_load(cls, path, report) -> None:
        from edgeproof.runtime.backends.onnx_graph import plain_session

        plain_session(path, optimize=True)

    def load(self) -> None:
        ort = require("onnxruntime", None, "running .onnx models with the onnxruntime backend")
        wanted = [p for p in (self.providers or [CPU])]
        available = ort.get_available_providers()
        missing = [p for p in wanted if p not in available]
        if missing:
            self._ep_failed(missing, f"not in this onnxruntime build (available: {', '.join(available)})")
            wanted = [p for p in wanted if p in available]
        if CPU not in wanted:
            wanted.append(CPU)
        so = ort.SessionOptions()
        if self.threads:
            so.intra_op_num_threads = int(self.threads)
            so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 4  # its errors come back as exceptions: no red [E:onnxruntime] lines on stderr
        so.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
        try:
            # enable_fallback=0: no 'EP Error ... Falling back' banner printed to stdout and no silent retry.
            sess = ort.InferenceSession(str(self.path), so, providers=wanted, enable_fallback=0,
                                        provider_options=[dict(self.provider_options.get(p, {})) for p in wanted])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own Fail/InvalidGraph/... types
            from edgeproof.runtime.model_check import invalid, ort_reason

            raise invalid(self.path, "onnx", f"onnxruntime cannot load it ({ort_reason(exc)})") from None
        active = list(sess.get_providers())
        dropped = [p for p in wanted if p not in active and p != CPU]
        if dropped:  # requested, in the build, but failed to initialise (missing CUDA libs, ...)
            self._ep_failed(dropped, "failed to initialise; onnxruntime fell back")
        from edgeproof.runtime.output_check import check_io_counts

        check_io_counts(self.path, [i.name for i in sess.get_inputs()], [o.name for o in sess.get_outputs()])
        self.active_providers = active
        self._sess = sess
        self._in_name = sess.get_inputs()[0].name
        self._out_names = [sess.get_outputs()[0].name]
        self.input_spec = ort_spec(sess.get_inputs()[0])
        self.output_spec = ort_spec(sess.get_outputs()[0])
        self.batch_ok = self.input_spec.shape[0] is None if self.input_spec.shape else False
        self._run = sess.run
        self._run_options = ort.RunOptions()
        self._run_options.log_severity_level = 4
        self.placement = self._placement(sess, active)
        failed = list(self.failed_accelerators)
        if failed:  # --allow-fallback: the summary must say the accelerator was NOT used
            self.placement.update(fallback=True, failed_providers=failed,
                                  where=f"{self.placement['where']} (FALLBACK: {', '.join(failed)} unavailable)")

    def _ep_failed(self, providers: list[str], why: str) -> None:
        lines = [self.install_hint] if self.install_hint else [EP_INSTALL.get(p, f"an onnxruntime build with {p}")
                                                               for p in providers]
        self._accelerator_unavailable(
            "EXECUTION PROVIDER", providers,
            f"ONNX Runtime execution provider(s) {', '.join(providers)} {why}; install: {'; '.join(lines)}",
            then="RUNNING WITHOUT IT")

    def _placement(self, sess, active: list[str]) -> dict[str, Any]:
        by_ep: dict[str, int] = {}
        try:
            for sub in sess.get_provider_graph_assignment_info():
                by_ep[sub.ep_name] = by_ep.get(sub.ep_name, 0) + len(sub.get_nodes())
        except (AttributeError, RuntimeError) as exc:  # older onnxruntime: only the active provider list is known
            self.degrade("no per-node provider assignment in this onnxruntime: the placement lists the active "
                         "providers only", exc)
            return {"accelerator": None, "cpu": None, "total": None, "where": " > ".join(active),
                    "providers": active}
        total = sum(by_ep.values())
        cpu = by_ep.get(CPU, 0)
        where = ", ".join(f"{n}/{total} nodes on {ep.replace('ExecutionProvider', '')}" for ep, n in by_ep.items())
        return {"accelerator": total - cpu, "cpu": cpu, "total": total, "where": where or "cpu",
                "providers": active, "by_provider": by_ep}

    def read_meta(self) -> ArtifactMeta | None:
        text = self._sess.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        from edgeproof.runtime.metadata import parse_metadata

        return parse_metadata(text, self.path) if text else None

    def run(self, x: np.ndarray) -> np.ndarray:
        return self._run(self._out_names, {self._in_name: x}, self._run_options)[0]

    def output_names(self) -> list[str]:
        return [o.name for o in self._sess.get_outputs()]

    def select_output(self, name: str) -> bool:
        from edgeproof.runtime.backends.onnx_graph import ort_spec

        out = next((o for o in self._sess.get_outputs() if o.name == name), None)
        if out is None:
            return False
        self._out_names, self.output_spec = [name], ort_spec(out)
        return True

    def cancel(self) -> bool:
        self._run_options.terminate = True  # ONNX Runtime checks it between nodes, Loop iterations included
        return True

    def close(self) -> None:
        self._run = None
        self._sess = None
