"""Open Inference Protocol v2 request/response bodies: JSON, and Triton's binary tensor data extension.

JSON: `{"inputs": [{"name", "shape", "datatype", "data"}], "outputs"?, "parameters"?, "id"?}`.
Binary (what tritonclient sends by default): the header `Inference-Header-Content-Length: n` says the
first n bytes are that JSON; an input with `"parameters": {"binary_data_size": k}` has its data in the
next k bytes (FP32 little-endian, UINT8/INT8 one byte each; BYTES elements each prefixed by a 4-byte
little-endian length). UINT8 or INT8 is a quantized model's own input (its interpreter's integers, after
the artifact's preprocessing and the input tensor's scale/zero point), accepted only when that is the
model's native input type, and passed to the interpreter as is (no float round trip). Outputs
asked for with `"binary_data": true` (or the request's `"binary_data_output": true`) come back the same way.
Everything here runs in the decode pool, never on the event loop.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass

import numpy as np

from edgeproof.serve.config import MAX_IMAGES_PER_REQUEST
from edgeproof.serve.images import BadImage, b64_image
from edgeproof.serve.service import HttpError

HEADER = "inference-header-content-length"


@dataclass
class Parsed:
    req: dict
    x: np.ndarray | None  # FP32 batch in model-input space, or the model's native UINT8/INT8 input, or
    items: list[tuple[str, bytes]] | None  # encoded images (BYTES)
    outputs: list[tuple[int | None, bool]]  # per output: (classification K or None, binary?)


def native_datatype(model) -> str | None:
    """'UINT8' or 'INT8' for a quantized model's own input type, else None (FP32 and BYTES only)."""
    return model.native_dtype.upper() if model.native_dtype else None


def expected(model) -> str:
    pp = model.preprocess
    hwc = f"[N, {pp.height}, {pp.width}, {pp.channels}]"
    native = native_datatype(model)
    own = f", as {native} {hwc} (the quantized interpreter's own input)" if native else ""
    return f"'{model.input_spec.name}' as FP32 {hwc} (model-input space){own} or as BYTES [N] (encoded images)"


def _split(raw: bytes, header: str | None) -> tuple[bytes, bytes]:
    if header is None:
        return raw, b""
    try:
        n = int(header)
    except ValueError:
        n = -1
    if not 0 <= n <= len(raw):
        raise HttpError(400, f"Inference-Header-Content-Length {header[:20]} does not fit the {len(raw)}-byte body")
    return raw[:n], raw[n:]


def _byte_elements(chunk: bytes, name: str) -> list[bytes]:
    out, pos = [], 0
    while pos < len(chunk):
        if pos + 4 > len(chunk):
            raise HttpError(400, f"BYTES input '{name}' binary data is cut inside an element's length")
        (n,) = struct.unpack_from("<I", chunk, pos)
        if pos + 4 + n > len(chunk):
            raise HttpError(400, f"BYTES input '{name}' binary element {len(out)} claims {n} bytes; fewer are left")
        out.append(chunk[pos + 4:pos + 4 + n])
        pos += 4 + n
    return out


def _outputs(req: dict, model) -> list[tuple[int | None, bool]]:
    out_name = model.output_spec.name
    params = req.get("parameters") if isinstance(req.get("parameters"), dict) else {}
    binary_default = bool(params.get("binary_data_output", False))
    asked = req.get("outputs")
    if asked is None:
        return [(None, binary_default)]
    if not isinstance(asked, list) or not all(isinstance(o, dict) for o in asked):
        raise HttpError(400, f"\"outputs\" must be a list of {{\"name\": ...}}; this model has output '{out_name}'")
    result = []
    for o in asked:
        if o.get("name") != out_name:
            raise HttpError(400, f"unknown output '{str(o.get('name'))[:80]}'; this model's output is '{out_name}'")
        p = o.get("parameters") if isinstance(o.get("parameters"), dict) else {}
        k = p.get("classification")
        if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k < 1):
            raise HttpError(400, f"output '{out_name}' parameter classification must be an integer >= 1; got {k}")
        result.append((k, bool(p.get("binary_data", binary_default))))
    return result


def parse(raw: bytes, header: str | None, model) -> Parsed:
    """The request, checked against the model; HttpError(400) naming what is expected."""
    head, binary = _split(raw, header)
    try:
        req = json.loads(head)
    except (ValueError, RecursionError) as exc:
        raise HttpError(400, f"request body is not JSON ({str(exc)[:80]}); send an OIP v2 inference request "
                             '{"inputs": [{"name", "shape", "datatype", "data"}]}') from None
    return from_request(req, binary, model, b"true" in head or b"false" in head)


def from_request(req, binary: bytes, model, maybe_bool: bool = False) -> Parsed:
    """A decoded request (JSON, or built from a gRPC ModelInferRequest with its raw contents in `binary`)."""
    inputs = req.get("inputs") if isinstance(req, dict) else None
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise HttpError(400, f"an inference request needs \"inputs\" with exactly one tensor: {expected(model)}")
    outputs = _outputs(req, model)
    inp = inputs[0]
    name, dtype, shape = inp.get("name"), inp.get("datatype"), inp.get("shape")
    if name != model.input_spec.name:
        raise HttpError(400, f"unknown input '{str(name)[:80]}'; this model takes {expected(model)}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise HttpError(400, f"input '{name}' needs \"shape\" as a list of integers; expected {expected(model)}")
    params = inp.get("parameters") if isinstance(inp.get("parameters"), dict) else {}
    size = params.get("binary_data_size")
    chunk = None
    if size is not None:
        if not isinstance(size, int) or not 0 <= size <= len(binary):
            raise HttpError(400, f"input '{name}' binary_data_size {size} does not fit the {len(binary)} binary bytes")
        chunk = binary[:size]
    elif not isinstance(inp.get("data"), list):
        raise HttpError(400, f"input '{name}' needs \"data\" as a JSON array, or binary_data_size with binary data")
    if dtype == "BYTES":
        return Parsed(req, None, _bytes_input(name, shape, chunk, inp.get("data")), outputs)
    pp = model.preprocess
    native = native_datatype(model)
    if dtype not in ("FP32", native) or len(shape) != 4 or shape[1:] != [pp.height, pp.width, pp.channels] or \
            not 1 <= shape[0] <= MAX_IMAGES_PER_REQUEST:
        raise HttpError(400, f"input '{name}' is {str(dtype)[:20]} {shape}; expected {expected(model)} "
                             f"with 1 <= N <= {MAX_IMAGES_PER_REQUEST}")
    if dtype == native:
        return Parsed(req, _integers(chunk, inp.get("data"), name, shape, model.native_dtype, maybe_bool), None,
                      outputs)
    x = np.frombuffer(chunk, "<f4") if chunk is not None and len(chunk) % 4 == 0 else \
        _numbers(inp.get("data") if chunk is None else [], name, shape, maybe_bool)
    if x.size != math.prod(shape):
        held = f"{len(chunk)} binary bytes" if chunk is not None else f"{x.size} values"
        raise HttpError(400, f"input '{name}' has shape {shape} ({math.prod(shape)} values) but the data holds {held}")
    x = x.astype(np.float32).reshape(shape)
    if not np.isfinite(x).all():
        raise HttpError(400, f"input '{name}' holds NaN or infinite values; send finite FP32 values")
    return Parsed(req, x, None, outputs)


def _numbers(data: list, name: str, shape: list[int], maybe_bool: bool, as_float: bool = True,
             dtype: str = "FP32") -> np.ndarray:
    """JSON numbers only, as Triton takes them: true/false or strings in the data are a 400, not 1.0/0.0."""
    bad = HttpError(400, f"input '{name}' data must be JSON numbers only ({dtype} {shape}); true/false, strings and "
                         "null are not numbers")
    try:
        x = np.asarray(data)
    except ValueError:  # ragged nesting
        raise HttpError(400, f"input '{name}' data is not an array of numbers ({dtype} {shape})") from None
    if x.size and x.dtype.kind not in "iuf":
        raise bad
    if maybe_bool:  # [1.5, true] becomes float64 (and [1, true] int64) silently: look at the elements
        flat = data
        while flat and isinstance(flat[0], list):
            flat = [v for row in flat for v in row]
        if any(isinstance(v, bool) for v in flat):
            raise bad
    return x.astype(np.float32) if as_float else x


def _integers(chunk: bytes | None, data, name: str, shape: list[int], dtype: str, maybe_bool: bool) -> np.ndarray:
    """A native UINT8/INT8 tensor, from binary data (one byte each) or JSON integers in the type's range."""
    want = math.prod(shape)
    if chunk is not None:
        if len(chunk) != want:
            raise HttpError(400, f"input '{name}' has shape {shape} ({want} values) but the data holds {len(chunk)} "
                                 f"binary bytes ({dtype.upper()} is one byte per value)")
        return np.frombuffer(chunk, dtype).reshape(shape)
    info = np.iinfo(dtype)
    x = _numbers(data, name, shape, maybe_bool, as_float=False, dtype=dtype.upper())
    if x.size != want:
        raise HttpError(400, f"input '{name}' has shape {shape} ({want} values) but the data holds {x.size} values")
    if x.size and (x.dtype.kind == "f" or x.min() < info.min or x.max() > info.max):
        raise HttpError(400, f"input '{name}' is {dtype.upper()}: its data must be integers from {info.min} to "
                             f"{info.max}; got values outside that (or fractions)")
    return x.astype(dtype).reshape(shape)


def _bytes_input(name: str, shape: list[int], chunk: bytes | None, data) -> list[tuple[str, bytes]]:
    if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)) or not 1 <= shape[0] <= MAX_IMAGES_PER_REQUEST:
        raise HttpError(400, f"BYTES input '{name}' has shape {shape}; expected [N] or [N, 1] with 1 <= N <= "
                             f"{MAX_IMAGES_PER_REQUEST} encoded images")
    if chunk is not None:
        elements = _byte_elements(chunk, name)
    else:
        flat = data if not data or not isinstance(data[0], list) else [v for row in data for v in row]
        try:
            elements = [b64_image(v, i) for i, v in enumerate(flat)]
        except BadImage as exc:
            raise HttpError(400, f"input '{name}' {exc}") from None
    if len(elements) != shape[0]:
        raise HttpError(400, f"BYTES input '{name}' has shape {shape} but {len(elements)} element(s) in its data")
    return [(f"element {i}", e) for i, e in enumerate(elements)]


def encode(parsed: Parsed, model, probs: np.ndarray) -> tuple[list[dict], list[bytes]]:
    """(output tensors for the JSON, binary blobs in the same order) for what the request asked."""
    out_name, tensors, blobs = model.output_spec.name, [], []
    for k, binary in parsed.outputs:
        if k is None:
            t = {"name": out_name, "datatype": "FP32", "shape": list(probs.shape)}
            data: list | bytes = probs.astype("<f4").tobytes() if binary else probs.ravel().tolist()
        else:
            k = min(k, probs.shape[1])
            idx = np.argsort(-probs, axis=1, kind="stable")[:, :k]
            strings = [f"{row[i]:f}:{int(i)}:{model.label(int(i))}" for row, ids in zip(probs, idx) for i in ids]
            t = {"name": out_name, "datatype": "BYTES", "shape": [len(probs), k]}
            data = b"".join(struct.pack("<I", len(b)) + b for b in (s.encode() for s in strings)) if binary else strings
        if binary:
            t["parameters"] = {"binary_data_size": len(data)}
            blobs.append(data)
        else:
            t["data"] = data
        tensors.append(t)
    return tensors, blobs
