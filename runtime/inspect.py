"""Inspect a .tflite or .onnx artifact without TensorFlow: I/O tensors (name, shape, dtype,
quantization), op histogram, embedded metadata, size, which runtimes here can load it, and the
op-version / runtime-version compatibility of TFLite files (e.g. against legacy tflite-runtime 2.14).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

from edgeproof.contract import TensorSpec
from edgeproof.errors import UsageError
from edgeproof.formats import BACKENDS, backend_installed, backends_for, family_of, format_of

LEGACY_RUNTIME = "2.14.0"  # the last tflite-runtime wheel (numpy<2)
LEGACY_ENV = "EDGEPROOF_LEGACY_VENV"  # a venv with tflite-runtime; its loader result is reported


def _version_tuple(text: str | None) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text or "")[:3])


def _short(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {' | '.join(lines[:3])}"[:400]


def _spec_from_details(d: dict) -> dict[str, Any]:
    from edgeproof.runtime.backends.tflite_interpreter import tensor_spec

    q = d.get("quantization_parameters") or {}
    per_channel = q.get("scales") is not None and len(q.get("scales")) > 1
    return {**tensor_spec(d).to_dict(), **({"per_channel": True} if per_channel else {})}


def tflite_flatbuffer(data: bytes) -> dict[str, Any]:
    """Operator codes with versions, op histogram, min_runtime_version and the producing TF version."""
    from ai_edge_litert import schema_py_generated as schema

    from edgeproof.runtime.metadata import strip_tflite_metadata

    model = schema.ModelT.InitFromPackedBuf(strip_tflite_metadata(data), 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    codes = []
    for oc in model.operatorCodes or []:
        builtin = max(int(oc.builtinCode or 0), int(oc.deprecatedBuiltinCode or 0))
        custom = oc.customCode.decode() if oc.customCode else None
        codes.append({"op": custom or names.get(builtin, str(builtin)), "version": int(oc.version or 1),
                      "custom": bool(custom)})
    hist: Counter = Counter()
    for sg in model.subgraphs or []:
        for op in sg.operators or []:
            hist[codes[op.opcodeIndex]["op"]] += 1
    meta: dict[str, Any] = {}
    for m in model.metadata or []:
        key = m.name.decode() if isinstance(m.name, bytes) else str(m.name)
        buf = model.buffers[m.buffer].data if m.buffer < len(model.buffers) else None
        raw = bytes(buf) if buf is not None else b""
        if key == "min_runtime_version":
            meta[key] = raw.split(b"\0")[0].decode(errors="replace")
        elif key == "CONVERSION_METADATA":
            found = re.findall(rb"(\d+\.\d+\.\d+[\w.-]*)", raw)
            meta["converter_tensorflow_version"] = found[0].decode() if found else None
    desc = model.description.decode() if isinstance(model.description, bytes) else model.description
    return {"schema_version": int(model.version), "description": desc, "operator_codes": codes,
            "op_histogram": dict(hist.most_common()), **meta}


def _litert_io(path: Path) -> dict[str, Any]:
    from edgeproof.runtime.backends.tflite_interpreter import bare_interpreter

    it = bare_interpreter(path)
    ops = Counter(o["op_name"] for o in it._get_ops_details())
    return {"inputs": [_spec_from_details(d) for d in it.get_input_details()],
            "outputs": [_spec_from_details(d) for d in it.get_output_details()],
            "op_histogram": dict(ops.most_common())}


def _inspect_tflite(path: Path, data: bytes) -> dict[str, Any]:
    out: dict[str, Any] = {"notes": []}
    try:
        out.update(tflite_flatbuffer(data))
    except ImportError:
        out["notes"].append("op versions need ai_edge_litert's flatbuffer schema: pip install ai-edge-litert")
    except Exception as exc:  # noqa: BLE001 - any runtime/converter error becomes one reported line
        out["notes"].append(f"cannot parse the flatbuffer: {_short(exc)}")
    try:
        out.update(_litert_io(path))
    except ImportError:  # MissingDependency is one
        out["notes"].append("I/O details need a TFLite interpreter: pip install ai-edge-litert")
    except Exception as exc:  # noqa: BLE001 - any runtime/converter error becomes one reported line
        out["notes"].append(f"ai_edge_litert cannot list the tensors: {_short(exc)}")
    if "operator_codes" not in out and "inputs" not in out:  # neither parser nor interpreter could read it
        from edgeproof.runtime.model_check import invalid

        raise invalid(path, "tflite", out["notes"][0][:160])
    if any(c.get("custom") for c in out.get("operator_codes", [])):
        customs = sorted({c["op"] for c in out["operator_codes"] if c["custom"]})
        out["notes"].append(f"custom op(s) {', '.join(customs)}: need a delegate/op resolver "
                            "(edgetpu-custom-op: the libedgetpu delegate and a Coral device)")
    return out


def _inspect_onnx(path: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"notes": []}
    if importlib.util.find_spec("onnx") is None:
        out["notes"].append("op histogram and opsets need the 'onnx' package: pip install onnx")
        try:
            from edgeproof.runtime.backends.onnx_graph import ort_spec, plain_session

            sess = plain_session(path, optimize=True)
            out["inputs"] = [ort_spec(a).to_dict() for a in sess.get_inputs()]
            out["outputs"] = [ort_spec(a).to_dict() for a in sess.get_outputs()]
        except ImportError:
            out["notes"].append("I/O details need onnxruntime: pip install onnxruntime")
        except Exception as exc:  # noqa: BLE001 - the only reader here failed: not a usable ONNX file
            from edgeproof.runtime.model_check import invalid, ort_reason

            raise invalid(path, "onnx", f"onnxruntime cannot read it ({ort_reason(exc)[:160]})") from None
        return out
    import onnx

    from edgeproof.runtime.backends.onnx_graph import graph_inputs, value_spec

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf DecodeError and friends: not an ONNX file
        from edgeproof.runtime.model_check import invalid

        raise invalid(path, "onnx", f"the onnx package cannot parse it ({_short(exc)[:160]})") from None
    def spec(v) -> dict[str, Any]:
        return value_spec(v, keep_symbols=True).to_dict()

    hist = Counter(n.op_type for n in model.graph.node)
    out.update(inputs=[spec(v) for v in graph_inputs(model)],
               outputs=[spec(v) for v in model.graph.output], op_histogram=dict(hist.most_common()),
               opsets={(o.domain or "ai.onnx"): int(o.version) for o in model.opset_import
                       if not o.domain or o.domain in {n.domain for n in model.graph.node}},
               ir_version=int(model.ir_version), producer=f"{model.producer_name} {model.producer_version}".replace(" None", "").strip())
    if hist.get("QuantizeLinear"):
        out["notes"].append(f"QDQ-quantized: {hist['QuantizeLinear']} QuantizeLinear / "
                            f"{hist.get('DequantizeLinear', 0)} DequantizeLinear nodes; float32 I/O")
    return out


def _try_load(backend: str, path: Path, report: dict[str, Any]) -> tuple[str, str | None]:
    """('ok'|'failed'|'not installed', detail) for one runtime on this machine (its class's inspect_load;
    e.g. OpenCV DNN, which can crash on a damaged file, is tried in a guarded child unless vouched for)."""
    b = BACKENDS[backend]
    if not backend_installed(backend):
        return "not installed", b.install
    try:
        b.load_class().inspect_load(path, report)
    except Exception as exc:  # noqa: BLE001 - any runtime/converter error becomes one reported line
        return "failed", _short(exc)
    return "ok", None


def _legacy_check(path: Path, legacy_venv: str | None) -> dict[str, Any] | None:
    """Load the file with tflite-runtime in a separate numpy<2 venv (EDGEPROOF_LEGACY_VENV)."""
    venv = legacy_venv or os.environ.get(LEGACY_ENV)
    if not venv:
        return None
    py = Path(venv) / "bin" / "python"
    if not py.is_file():
        return {"runtime": "tflite-runtime (legacy venv)", "status": "failed",
                "detail": f"no python at {py}; make the venv with benchmarks/legacy_tflite_runtime.sh"}
    code = ("import sys, tflite_runtime, tflite_runtime.interpreter as t\n"
            "i = t.Interpreter(model_path=sys.argv[1]); i.allocate_tensors()\n"
            "print(tflite_runtime.__version__)")
    try:
        proc = subprocess.run([str(py), "-c", code, str(path)], capture_output=True, text=True, timeout=120,
                              check=False)
    except subprocess.TimeoutExpired:
        return {"runtime": "tflite-runtime (legacy venv)", "status": "failed", "detail": "timed out after 120 s"}
    if proc.returncode == 0:
        return {"runtime": f"tflite-runtime {proc.stdout.strip()} (legacy venv)", "status": "ok", "detail": None}
    err = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    return {"runtime": "tflite-runtime (legacy venv)", "status": "failed", "detail": " | ".join(err[-2:])[:400]}


def compat_checks(info: dict[str, Any], target: str = LEGACY_RUNTIME) -> list[dict[str, Any]]:
    """Compare the converter-computed min_runtime_version with a TFLite runtime version."""
    need = info.get("min_runtime_version")
    if not need:
        return [{"runtime": f"tflite-runtime {target}", "ok": None,
                 "reason": "the file records no min_runtime_version; only a real load can tell"}]
    ok = _version_tuple(need) <= _version_tuple(target)
    reason = (f"needs TFLite runtime >= {need} (newest builtin op versions: "
              + ", ".join(f"{c['op']} v{c['version']}" for c in sorted(
                  info.get("operator_codes", []), key=lambda c: -c["version"])[:4]) + ")")
    return [{"runtime": f"tflite-runtime {target}", "ok": ok,
             "reason": reason if not ok else f"min_runtime_version {need} <= {target}"}]


def integrity(path: Path, sha256: str, verify: bool = True) -> dict[str, Any]:
    """Does the file match the sha256 its manifest.json records? (inspect reports it, never refuses.)"""
    from edgeproof.runtime.integrity import expected

    if not verify:
        return {"manifest": None, "expected": None, "matches": None, "note": "not checked (--no-verify)"}
    want, note, manifest = expected(path)
    return {"manifest": str(manifest) if manifest.is_file() else None, "expected": want,
            "matches": None if want is None else want == sha256,
            "note": note or (None if want else "no manifest entry with a sha256 for this file")}


def inspect_model(path: str | Path, runtime_version: str = LEGACY_RUNTIME, legacy_venv: str | None = None,
                  check_runtimes: bool = True, verify: bool = True) -> dict[str, Any]:
    """Everything `edgeproof inspect` shows, as a JSON-ready dict.

    A file that fails the structural check (runtime.model_check) or declares absurd I/O shapes is
    refused (InvalidModel) before any runtime opens it; a sha256 mismatch with manifest.json is
    reported under "integrity", not refused.
    """
    from edgeproof.runtime.metadata import read_metadata
    from edgeproof.runtime.model_check import (
        NeedsNewerRuntime,
        check_file,
        check_io,
        check_prepared_tflite,
        light_tflite_interpreter,
    )

    path = Path(path)
    if path.is_dir():
        raise UsageError(f"'{path}' is a folder; give a .tflite or .onnx model file")
    family = family_of(path)
    if not path.is_file():
        raise UsageError(f"'{path}' does not exist or is not a file; give a .tflite or .onnx model")
    check_file(path, family)
    data = path.read_bytes()
    fmt = format_of(path)
    report: dict[str, Any] = {"path": str(path), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                              "family": family, "format": fmt.name if fmt else None}
    report["integrity"] = integrity(path, report["sha256"], verify)
    try:
        meta = read_metadata(path)
    except Exception as exc:  # noqa: BLE001 - any runtime/converter error becomes one reported line
        meta = None
        report.setdefault("notes", []).append(f"metadata unreadable: {_short(exc)}")
    report["metadata"] = meta.to_dict() if meta else None
    if meta and not report["format"]:
        report["format"] = meta.format
    body = _inspect_tflite(path, data) if family == "tflite" else _inspect_onnx(path)
    report["notes"] = report.get("notes", []) + body.pop("notes")
    report.update(body)
    if report.get("inputs") and report.get("outputs"):
        spec = [TensorSpec(s["name"], [d if isinstance(d, int) else None for d in s["shape"]], s["dtype"])
                for s in (report["inputs"][0], report["outputs"][0])]
        pp = meta.preprocess if meta else None
        check_io(path, family, spec[0], spec[1], pp.height if pp else 0, pp.width if pp else 0)
    too_new = None
    if family == "tflite" and (interpreter := light_tflite_interpreter()) is not None:
        try:
            check_prepared_tflite(path, interpreter)  # before any runtime below allocates for the real shapes
        except NeedsNewerRuntime as exc:  # reported per runtime and in "compat", not refused: inspect's job
            too_new = str(exc)
    if check_runtimes:
        runtimes = []
        for name in backends_for(family):
            # a file the Interpreter cannot open never reaches CompiledModel & co (they crashed on such files)
            status, detail = ("failed", too_new) if too_new else _try_load(name, path, report)
            runtimes.append({"runtime": name, "status": status, "detail": detail})
        if family == "tflite" and importlib.util.find_spec("tflite_runtime") is not None:
            status, detail = "ok", None
            try:
                from tflite_runtime.interpreter import Interpreter as LegacyInterpreter

                LegacyInterpreter(model_path=str(path)).allocate_tensors()
            except Exception as exc:  # noqa: BLE001 - any runtime/converter error becomes one reported line
                status, detail = "failed", _short(exc)
            runtimes.append({"runtime": "tflite-runtime", "status": status, "detail": detail})
        legacy = _legacy_check(path, legacy_venv) if family == "tflite" else None
        if legacy:
            runtimes.append(legacy)
        report["runtimes"] = runtimes
    if family == "tflite":
        report["compat"] = compat_checks(report, runtime_version)
    return report
