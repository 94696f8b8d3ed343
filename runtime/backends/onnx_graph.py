"""The one ONNX tensor-spec reader: from an onnxruntime session, or from the onnx package's graph.

`read_io(path)` gives the first input/output TensorSpec and metadata_props without running the
model (onnxruntime without optimizations, else the onnx package); `ort_spec` and `value_spec`
convert one tensor description. Symbolic dims are None (or their name, with keep_symbols).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeproof.contract import TensorSpec
from edgeproof.errors import require

ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
              "tensor(uint8)": "uint8", "tensor(int8)": "int8", "tensor(int32)": "int32", "tensor(int64)": "int64"}
ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64", 9: "bool",
               10: "float16", 11: "float64", 12: "uint32", 13: "uint64", 16: "bfloat16"}


def ort_spec(arg: Any) -> TensorSpec:
    """TensorSpec from an onnxruntime NodeArg (symbolic dims -> None)."""
    shape = [d if isinstance(d, int) and d > 0 else None for d in arg.shape]
    return TensorSpec(name=arg.name, shape=shape, dtype=ORT_DTYPES.get(arg.type, arg.type))


def value_spec(v: Any, keep_symbols: bool = False) -> TensorSpec:
    """TensorSpec from an onnx ValueInfoProto; keep_symbols keeps a named dim's name ('N') instead of None."""
    tt = v.type.tensor_type
    shape = [d.dim_value if d.dim_value > 0 else ((d.dim_param or None) if keep_symbols else None)
             for d in tt.shape.dim]
    return TensorSpec(name=v.name, shape=shape, dtype=ONNX_DTYPES.get(tt.elem_type, str(tt.elem_type)))


def graph_inputs(model: Any) -> list[Any]:
    """The graph inputs that are not initializers (the ones a caller feeds)."""
    init = {i.name for i in model.graph.initializer}
    return [v for v in model.graph.input if v.name not in init]


def proto_io(model: Any) -> tuple[TensorSpec, TensorSpec]:
    """(first fed input, first output) specs of an onnx.ModelProto, without running it."""
    return value_spec(graph_inputs(model)[0]), value_spec(model.graph.output[0])


def plain_session(path: str | Path, optimize: bool = False) -> Any:
    """An onnxruntime CPU session (no graph optimizations unless asked; logging at errors only)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"], enable_fallback=0)


def read_io(path: str | Path) -> tuple[TensorSpec, TensorSpec, dict[str, str]]:
    """(input spec, output spec, metadata_props) of an ONNX file without running it."""
    try:
        sess = plain_session(path)
    except ImportError:
        pass
    else:
        return (ort_spec(sess.get_inputs()[0]), ort_spec(sess.get_outputs()[0]),
                dict(sess.get_modelmeta().custom_metadata_map))
    onnx = require("onnx", None, "reading ONNX input shapes")
    m = onnx.load(str(path), load_external_data=False)
    return (*proto_io(m), {p.key: p.value for p in m.metadata_props})


def read_props(path: str | Path) -> dict[str, str]:
    """metadata_props through onnxruntime (a base dependency) or onnx, whichever exists."""
    try:
        return dict(plain_session(path).get_modelmeta().custom_metadata_map)
    except ImportError:
        import onnx

        return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
