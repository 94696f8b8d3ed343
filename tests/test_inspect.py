"""`edgeproof inspect`: I/O, ops, metadata and loadability of every artifact, without TensorFlow;
op-version compatibility against an older TFLite runtime."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgeproof.cli.main import run_cli
from edgeproof.formats import FORMATS, artifact_filename

slow = pytest.mark.slow  # these use the session's trained + converted tiny run


def _vt(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".")[:3])


@slow
@pytest.mark.parametrize("name", list(FORMATS))
def test_inspect_every_format(name, tiny_artifacts):
    from edgeproof.runtime.inspect import inspect_model

    fmt = FORMATS[name]
    r = inspect_model(tiny_artifacts / artifact_filename(fmt))
    assert r["format"] == name and r["family"] == fmt.family and r["bytes"] > 0
    assert r["metadata"]["format"] == name and r["metadata"]["labels"]
    (inp,), (_out,) = r["inputs"], r["outputs"]
    assert inp["shape"][1:] == r["metadata"]["input"]["shape"][1:]
    assert inp["dtype"] == r["metadata"]["input"]["dtype"]
    if inp["dtype"] in ("int8", "uint8"):
        assert inp["scale"] == pytest.approx(r["metadata"]["input"]["scale"])
        assert inp["zero_point"] == r["metadata"]["input"]["zero_point"]
    assert sum(r["op_histogram"].values()) > 0
    status = {x["runtime"]: x["status"] for x in r["runtimes"]}
    assert status[fmt.backends[0]] == "ok", r["runtimes"]
    if fmt.family == "tflite":
        assert r["converter_tensorflow_version"] and r["min_runtime_version"]
        assert all(c["version"] >= 1 for c in r["operator_codes"])
        # convert keeps every TFLite format loadable by tflite-runtime 2.14 (tflite-dynamic: per-tensor dense)
        assert r["compat"][0]["ok"] is True, r["compat"]
        assert _vt(r["min_runtime_version"]) <= (2, 14, 0)
    else:
        assert r["opsets"]["ai.onnx"] == 17


@slow
def test_inspect_runs_without_tensorflow(tiny_artifacts):
    files = [str(tiny_artifacts / artifact_filename(FORMATS[n])) for n in ("tflite-int8", "onnx-int8")]
    code = ("import sys, json; from edgeproof.cli.main import run_cli\n"
            "for f in sys.argv[1:]:\n    assert run_cli(['inspect', '--json', f]) == 0\n"
            "bad = [k for k in sys.modules if k.split('.')[0] in ('tensorflow', 'keras', 'tf2onnx')]\n"
            "assert not bad, bad[:5]")
    proc = subprocess.run([sys.executable, "-c", code, *files], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    reports = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert [r["format"] for r in reports] == ["tflite-int8", "onnx-int8"]


def _bump_op_version(data: bytes, op: str, version: int, min_runtime: str) -> bytes:
    """Rewrite a TFLite flatbuffer so `op` claims a newer version, as a future converter would."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    from edgeproof.runtime.metadata import strip_tflite_metadata

    model = schema.ModelT.InitFromPackedBuf(strip_tflite_metadata(data), 0)
    code = getattr(schema.BuiltinOperator, op)
    for oc in model.operatorCodes:
        if max(oc.builtinCode, oc.deprecatedBuiltinCode) == code:
            oc.version = version
    for md in model.metadata:
        if md.name == b"min_runtime_version":
            model.buffers[md.buffer].data = list(min_runtime.encode().ljust(16, b"\0"))
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


@slow
def test_newer_op_version_than_runtime_is_reported(tiny_artifacts, tmp_path):
    from edgeproof.runtime.inspect import inspect_model

    src = tiny_artifacts / artifact_filename(FORMATS["tflite-fp32"])
    future = tmp_path / "future.tflite"
    future.write_bytes(_bump_op_version(src.read_bytes(), "FULLY_CONNECTED", 99, "2.99.0"))
    r = inspect_model(future, runtime_version="2.14.0")
    assert {"op": "FULLY_CONNECTED", "version": 99, "custom": False} in r["operator_codes"]
    (check,) = r["compat"]
    assert check["ok"] is False and "needs TFLite runtime >= 2.99.0" in check["reason"]
    assert "FULLY_CONNECTED v99" in check["reason"]
    litert = next(x for x in r["runtimes"] if x["runtime"] == "litert")
    assert litert["status"] == "failed" and "FULLY_CONNECTED" in litert["detail"], litert
    assert inspect_model(src, runtime_version="2.14.0")["compat"][0]["ok"] is True


def test_inspect_cli_errors(tmp_path, capsys):
    assert run_cli(["inspect", str(tmp_path / "model.pb")]) == 2
    assert "unknown model suffix" in capsys.readouterr().err
    assert run_cli(["inspect", str(tmp_path / "missing.tflite")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_inspect_foreign_onnx_without_onnx_package(tmp_path, monkeypatch, capsys):
    """A model made elsewhere (no metadata); without the onnx package I/O still comes from onnxruntime."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    import edgeproof.runtime.inspect as insp

    graph = helper.make_graph([helper.make_node("Softmax", ["x"], ["y"], axis=1)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])])
    path = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    assert run_cli(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "Softmax×1" in out and "metadata: none embedded" in out
    real = insp.importlib.util.find_spec
    monkeypatch.setattr(insp.importlib.util, "find_spec", lambda n, *a: None if n == "onnx" else real(n, *a))
    r = insp.inspect_model(path, check_runtimes=False)
    assert r["inputs"][0]["name"] == "x" and r["inputs"][0]["dtype"] == "float32"
    assert any("pip install onnx" in n for n in r["notes"])


@slow
@pytest.mark.legacy
def test_tflite_artifacts_load_in_legacy_tflite_runtime(tiny_artifacts):
    """Needs EDGEPROOF_LEGACY_VENV: a numpy<2 venv with tflite-runtime 2.14 (benchmarks/legacy_tflite_runtime.sh)."""
    venv = os.environ.get("EDGEPROOF_LEGACY_VENV")
    if not venv or not (Path(venv) / "bin" / "python").is_file():
        pytest.skip("set EDGEPROOF_LEGACY_VENV to a venv with tflite-runtime 2.14 and numpy<2")
    from edgeproof.runtime.inspect import inspect_model

    loads = {}
    for name, fmt in FORMATS.items():
        if fmt.family != "tflite":
            continue
        r = inspect_model(tiny_artifacts / artifact_filename(fmt), legacy_venv=venv)
        legacy = next(x for x in r["runtimes"] if "legacy" in x["runtime"])
        loads[name] = legacy["status"] == "ok"
        # inspect's op-version prediction agrees with what the legacy runtime really does
        assert r["compat"][0]["ok"] is loads[name], (name, r["compat"], legacy)
        if not loads[name]:
            assert "version" in legacy["detail"], legacy
    assert loads["tflite-fp32"] and loads["tflite-int8"] and loads["edgetpu"], loads


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("edgeproof: error:"), err
    assert "Traceback" not in err and "internal error" not in err
    return lines[0]


@pytest.mark.parametrize("name, data", [("garbage.onnx", b"garbage\n"), ("empty.onnx", b"\x0a\xff"),
                                        ("garbage.tflite", b"garbage\n"), ("empty.tflite", b"")])
@pytest.mark.parametrize("with_onnx", [True, False])
def test_corrupt_model_file_exits_2_with_one_line(tmp_path, capsys, monkeypatch, name, data, with_onnx):
    """A damaged file is bad input (exit 2, one line saying what to do), not an internal error or exit 0."""
    import edgeproof.runtime.inspect as insp

    if not with_onnx:
        real = insp.importlib.util.find_spec
        monkeypatch.setattr(insp.importlib.util, "find_spec", lambda n, *a: None if n == "onnx" else real(n, *a))
    path = tmp_path / name
    path.write_bytes(data)
    assert run_cli(["inspect", str(path), "--no-load"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"{path.name} is not a valid" in line and ("re-convert" in line or "re-export" in line)


@slow
def test_truncated_artifacts_exit_2(tiny_artifacts, tmp_path, capsys):
    for fmt in ("tflite-fp32", "onnx-fp32"):
        data = (tiny_artifacts / artifact_filename(FORMATS[fmt])).read_bytes()
        path = tmp_path / artifact_filename(FORMATS[fmt])
        path.write_bytes(data[: len(data) // 3])
        assert run_cli(["inspect", str(path)]) == 2, fmt
        assert "may be truncated" in _one_error_line(capsys.readouterr().err)


@slow
def test_inspect_output_has_no_runtime_chatter(tiny_artifacts):
    """The runtime's C++ 'INFO: Created TensorFlow Lite XNNPACK delegate' line does not leak into the report."""
    path = tiny_artifacts / artifact_filename(FORMATS["tflite-int8"])
    r = subprocess.run([sys.executable, "-m", "edgeproof", "inspect", str(path)], capture_output=True, text=True,
                       check=False)
    assert r.returncode == 0, r.stderr
    assert "INFO: Created" not in r.stdout + r.stderr and "runtime litert: ok" in r.stdout


def test_runtime_version_must_be_a_version(tmp_path, capsys):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"x")
    assert run_cli(["inspect", str(path), "--runtime-version", "abc"]) == 2
    assert "--runtime-version 'abc' is not a version" in _one_error_line(capsys.readouterr().err)
