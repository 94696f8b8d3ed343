"""Cheap structural checks before a model file reaches an interpreter (issue 8: corrupt/hostile models).

TFLite: the "TFL3" identifier, then a bounds-checked walk of the flatbuffer tables the runtime uses
(subgraphs, tensors, operators, buffers): every offset inside the file, every tensor/op index in range,
every tensor shape non-negative with a bounded byte size, so a damaged or hostile file is refused
before an interpreter allocates for it. ONNX: the protobuf is parsed and checked by the loader itself
(ONNX Runtime raises cleanly on every damaged file the fuzz test makes); here only the magic-less
"is it plausibly a protobuf" test and the declared-shape sanity of `check_io` apply. OpenCV DNN, which
can crash on such files, gets a guarded trial load (runtime.guard).

Limits: MAX_SIDE for an image input's height/width, MAX_TENSOR_BYTES per tensor and
MAX_TOTAL_BYTES for all tensors together (an image classifier needs far less).
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path
from typing import Any

import numpy as np

from edgeproof.contract import MAX_SIDE, TensorSpec, score_units  # MAX_SIDE: input height/width
from edgeproof.errors import InvalidModel

MAX_CLASSES = 1 << 20
MAX_TENSOR_BYTES = 1 << 30  # 1 GiB per tensor
MAX_TOTAL_BYTES = 4 << 30  # all tensors of a subgraph
FAMILY_NAME = {"tflite": "TFLite", "onnx": "ONNX"}
# TensorType code -> bytes per element (sub-byte types rounded up; 0: no fixed size, e.g. string/resource).
_TFL_ITEMSIZE = {0: 4, 1: 2, 2: 4, 3: 1, 4: 8, 5: 0, 6: 1, 7: 2, 8: 8, 9: 1, 10: 8, 11: 16, 12: 8, 13: 0, 14: 0,
                 15: 4, 16: 2, 17: 1, 18: 2, 19: 1, 20: 1, 21: 1, 22: 1}


def invalid(path: str | Path, family: str, reason: str) -> InvalidModel:
    """The one-line error every check raises: '<file> is not a valid <TFLite|ONNX> model: <reason>; <fix>'."""
    return InvalidModel(f"{Path(path).name} is not a valid {FAMILY_NAME.get(family, family)} model: {reason}; "
                        "it may be truncated, damaged or another type of file: re-convert it ('edgeproof convert') "
                        "or copy it again")


class NeedsNewerRuntime(InvalidModel):
    """A well-formed .tflite whose operator versions this TFLite runtime does not have (made by a newer TF)."""


def _newer_op_version(path: str | Path, exc: BaseException) -> NeedsNewerRuntime | None:
    msg = str(exc)
    if "Didn't find op for builtin opcode" not in msg or "version" not in msg:
        return None
    return NeedsNewerRuntime(f"{Path(path).name} asks for an operator version the installed TFLite runtime "
                             f"lacks ({one_line(exc)}): it was made by a newer TensorFlow, or is damaged; upgrade "
                             "the runtime (pip install -U ai-edge-litert), convert with the TensorFlow your device "
                             "runs, or copy the file again")


def one_line(exc: BaseException) -> str:
    """'Type: first line of the message' (runtimes put whole reports in their exceptions)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")[:300]


def ort_reason(exc: BaseException) -> str:
    """ONNX Runtime's message without its '[ONNXRuntimeError] : 7 : INVALID_PROTOBUF : Load model from X failed:' prefix."""
    text = one_line(exc)
    return text.split(" failed:", 1)[1].strip() if " failed:" in text else text


class _Bad(Exception):
    """A structural defect found while walking the flatbuffer (turned into InvalidModel)."""


class FlatBuffer:
    """Just enough of the flatbuffers wire format to walk tables and vectors with bounds checks."""

    def __init__(self, buf) -> None:
        self.buf, self.n = buf, len(buf)

    def _u32(self, at: int) -> int:
        if at < 0 or at + 4 > self.n:
            raise _Bad(f"offset {at} points outside the {self.n}-byte file")
        return struct.unpack_from("<I", self.buf, at)[0]

    def _i32(self, at: int) -> int:
        return struct.unpack_from("<i", self.buf, at)[0] if 0 <= at <= self.n - 4 else self._u32(at)

    def table(self, at: int) -> int:
        """Position of the table referenced by the uoffset at `at`."""
        pos = at + self._u32(at)
        vt = pos - self._i32(pos)
        vlen = struct.unpack_from("<H", self.buf, vt)[0] if 0 <= vt <= self.n - 4 else -1
        if vlen < 4 or vt + vlen > self.n or vlen % 2:
            raise _Bad(f"table at byte {pos} has a broken vtable")
        if pos + struct.unpack_from("<H", self.buf, vt + 2)[0] > self.n:
            raise _Bad(f"table at byte {pos} runs past the end of the file")
        return pos

    def field(self, table: int, index: int) -> int | None:
        """Absolute position of field `index` in `table`, or None when absent."""
        vt = table - self._i32(table)
        vlen = struct.unpack_from("<H", self.buf, vt)[0]
        slot = 4 + 2 * index
        if slot + 2 > vlen:
            return None
        off = struct.unpack_from("<H", self.buf, vt + slot)[0]
        if not off:
            return None
        tlen = struct.unpack_from("<H", self.buf, vt + 2)[0]
        if off >= tlen or table + off >= self.n:
            raise _Bad(f"table at byte {table} has a field outside itself")
        return table + off

    def scalar(self, table: int, index: int, fmt: str, default: int = 0) -> int:
        at = self.field(table, index)
        if at is None:
            return default
        size = struct.calcsize(fmt)
        if at + size > self.n:
            raise _Bad(f"field at byte {at} runs past the end of the file")
        return struct.unpack_from("<" + fmt, self.buf, at)[0]

    def vector(self, table: int, index: int, elem: int) -> tuple[int, int]:
        """(position of the first element, length) of a vector field; (0, 0) when absent."""
        at = self.field(table, index)
        if at is None:
            return 0, 0
        pos = at + self._u32(at)
        length = self._u32(pos)
        if pos + 4 + length * elem > self.n:
            raise _Bad(f"a vector of {length} elements at byte {pos} runs past the end of the file")
        return pos + 4, length

    def ints(self, table: int, index: int) -> list[int]:
        start, length = self.vector(table, index, 4)
        return list(struct.unpack_from(f"<{length}i", self.buf, start)) if length else []

    def tables(self, table: int, index: int) -> list[int]:
        start, length = self.vector(table, index, 4)
        return [self.table(start + 4 * i) for i in range(length)]


def _tensor_bytes(shape: list[int], itemsize: int) -> int:
    total = max(itemsize, 1)
    for d in shape:
        total *= d
        if total > MAX_TENSOR_BYTES:
            return total
    return total


def _walk_tflite(fb: FlatBuffer) -> None:
    model = fb.table(0)
    n_codes = fb.vector(model, 1, 4)[1]
    n_buffers = len(fb.tables(model, 4))
    subgraphs = fb.tables(model, 2)
    if not subgraphs:
        raise _Bad("it has no subgraph")
    for g, sg in enumerate(subgraphs):
        tensors = fb.tables(sg, 0)
        n_t, total = len(tensors), 0
        for t, tensor in enumerate(tensors):
            shape = fb.ints(tensor, 0)
            ttype = fb.scalar(tensor, 1, "b")
            if ttype not in _TFL_ITEMSIZE:
                raise _Bad(f"tensor {t} has an unknown element type {ttype}")
            if len(shape) > 16 or any(d < 0 for d in shape):
                raise _Bad(f"tensor {t} has an impossible shape {shape[:8]}")
            size = _tensor_bytes(shape, _TFL_ITEMSIZE[ttype])
            if size > MAX_TENSOR_BYTES:
                raise _Bad(f"tensor {t} declares shape {shape} ({size / 2**30:.3g} GiB, limit "
                           f"{MAX_TENSOR_BYTES >> 20} MiB)")
            total += size
            if fb.scalar(tensor, 2, "I") >= max(n_buffers, 1):
                raise _Bad(f"tensor {t} refers to buffer {fb.scalar(tensor, 2, 'I')} of {n_buffers}")
            sig = fb.ints(tensor, 7)
            if len(sig) > 16 or any(d < -1 for d in sig):
                raise _Bad(f"tensor {t} has an impossible shape signature {sig[:8]}")
        if total > MAX_TOTAL_BYTES:
            raise _Bad(f"subgraph {g} declares {total / 2**30:.3g} GiB of tensors (limit {MAX_TOTAL_BYTES >> 30} GiB)")
        for which, idx in (("input", fb.ints(sg, 1)), ("output", fb.ints(sg, 2))):
            if any(not 0 <= i < n_t for i in idx):
                raise _Bad(f"subgraph {g} names {which} tensor(s) {idx} but has {n_t} tensors")
        for o, op in enumerate(fb.tables(sg, 3)):
            code = fb.scalar(op, 0, "I")
            if code >= n_codes:
                raise _Bad(f"operator {o} uses operator code {code} of {n_codes}")
            if any(not -1 <= i < n_t for i in fb.ints(op, 1) + fb.ints(op, 2)):
                raise _Bad(f"operator {o} refers to a tensor outside 0..{n_t - 1}")


def check_tflite(path: str | Path) -> None:
    """Refuse a file that is not a structurally sound TFLite flatbuffer (InvalidModel); O(size of the tables)."""
    path = Path(path)
    with open(path, "rb") as fh:
        size = fh.seek(0, 2)
        if size < 16:
            raise invalid(path, "tflite", f"it is {size} bytes long" if size else "the file is empty")
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            ident = bytes(buf[4:8])
            if ident != b"TFL3":
                raise invalid(path, "tflite", f"no TFL3 identifier (found {_describe_head(bytes(buf[:8]))})")
            try:
                _walk_tflite(FlatBuffer(buf))
            except (_Bad, struct.error) as exc:
                raise invalid(path, "tflite", str(exc)) from None


def check_prepared_tflite(path: str | Path, interpreter_cls: Any, input_shape: list[int] | None = None) -> None:
    """Refuse a TFLite file whose tensors, as the runtime sizes them, break MAX_TENSOR_BYTES/MAX_TOTAL_BYTES.

    check_tflite sees the shapes the file declares; allocate_tensors recomputes every intermediate shape
    from the input's, so a file can declare small intermediates behind a huge input (a 117 KB model with
    its input patched to 9000x9000 made XNNPACK take 24 s and 14 GiB). Preparing it once without
    delegates sizes every tensor in about a millisecond without touching the memory. A file this
    interpreter cannot even build is refused here (InvalidModel with its reason), before any other runtime
    sees it: LiteRT CompiledModel crashed (SIGSEGV) on such files where the Interpreter raises cleanly. Only
    a custom op or a Flex op is left to the real load, which names it.
    `input_shape`: the shape the runtime will really feed (the metadata's or --size's preprocess size),
    when it differs from the declared one.
    """
    from edgeproof.runtime.backends.tflite_interpreter import op_resolver_without_delegates, quiet_runtime_info

    resolver = op_resolver_without_delegates(interpreter_cls)
    if resolver is None:
        return
    with quiet_runtime_info():
        try:
            it = interpreter_cls(model_path=str(path), experimental_op_resolver_type=resolver)
        except Exception as exc:  # noqa: BLE001 - its reason is the answer
            if _needs_other_kernels(exc):
                return  # the real load names it (a custom op, or Flex ops that need the Flex delegate)
            raise _newer_op_version(path, exc) or invalid(
                path, "tflite", f"the LiteRT interpreter cannot open it ({one_line(exc)})") from None
        n_graph = len(it.get_tensor_details())  # the file's tensors; Prepare adds kernel scratch (im2col) after
        try:
            if input_shape is not None:
                it.resize_tensor_input(it.get_input_details()[0]["index"], list(input_shape))
            it.allocate_tensors()
        except Exception as exc:  # noqa: BLE001 - a builtin op cannot be prepared for these shapes
            if _needs_other_kernels(exc):
                return  # the real load names it (a custom op, or Flex ops that need the Flex delegate)
            raise invalid(path, "tflite", f"its operators cannot be prepared ({one_line(exc)})") from None
    try:
        details, inp = it.get_tensor_details(), [int(v) for v in it.get_input_details()[0]["shape"]]
    except Exception as exc:  # noqa: BLE001 - e.g. a tensor name that is not UTF-8 (flatbuffer strings must be)
        raise invalid(path, "tflite", f"its tensor table cannot be read ({one_line(exc)})") from None
    total = 0
    for d in details:  # (kernel scratch is not counted: XNNPACK, the default, has none of it)
        if d["index"] >= n_graph:
            continue
        shape = [int(v) for v in d["shape"]]
        size = _tensor_bytes(shape, np.dtype(d["dtype"]).itemsize)
        if size > MAX_TENSOR_BYTES:
            raise invalid(path, "tflite", f"with its input {inp} tensor {d['index']} '{d['name'][:40]}' becomes {shape} "
                          f"({size / 2**30:.3g} GiB, limit {MAX_TENSOR_BYTES >> 20} MiB)")
        total += size
    if total > MAX_TOTAL_BYTES:
        raise invalid(path, "tflite", f"with its input {inp} its tensors need {total / 2**30:.3g} GiB "
                      f"(limit {MAX_TOTAL_BYTES >> 30} GiB)")


def _needs_other_kernels(exc: BaseException) -> bool:
    """The interpreter refused only because the file needs kernels it lacks: a custom op or Flex ops."""
    text = str(exc)
    return "custom op" in text.lower() or "Select TensorFlow op" in text or "Flex" in text


def _describe_head(head: bytes) -> str:
    known = {b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"PK\x03\x04": "a zip archive",
             b"GIF8": "a GIF image", b"\x08": "an ONNX-like protobuf", b"{": "JSON text"}
    for magic, name in known.items():
        if head.startswith(magic):
            return name
    if head and all(32 <= c < 127 or c in (9, 10, 13) for c in head):
        return f"text {head.decode()!r}"
    return f"bytes {head.hex(' ')}"


def check_onnx(path: str | Path) -> None:
    """The cheap part for ONNX: not empty and not an obvious other file type (the loader parses the rest)."""
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(8)
    if not head:
        raise invalid(path, "onnx", "the file is empty")
    # A ModelProto starts with a field key: ir_version (0x08) or, from other writers, any small field number.
    if head[0] & 7 not in (0, 2) or head[0] >> 3 == 0 or head[0] >> 3 > 32:
        raise invalid(path, "onnx", f"it does not start like an ONNX protobuf (found {_describe_head(head)})")
    from edgeproof.runtime.onnx_external import outside_folder

    escape = outside_folder(path)  # before any runtime (OpenCV, OpenVINO) opens the named file as weights
    if escape is not None:
        raise InvalidModel(f"{path.name} names external data '{escape}' outside its folder; a model's external "
                           "data files must sit beside it (relative paths, no '..'): refusing to open it")


def check_file(path: str | Path, family: str) -> None:
    (check_tflite if family == "tflite" else check_onnx)(path)


def preflight(path: str | Path, verify: bool = True, trust_model: bool = False) -> str | None:
    """Before any runtime opens `path`: the manifest sha256 (verify), the structural check, the ops that run
    more than tensor math (runtime.model_ops; skipped with trust_model) and, for a TFLite file, the tensor
    sizes its input really gives (check_prepared_tflite; any backend).

    Returns the sha256 the manifest vouched for, or None (no manifest entry, or verify=False).
    """
    from edgeproof.formats import family_of
    from edgeproof.runtime.integrity import verify_manifest

    verified = verify_manifest(path) if verify else None
    family = family_of(path)
    check_file(path, family)
    from edgeproof.runtime.model_ops import check_ops

    check_ops(path, family, trust_model)  # a model is a program: file, Python and network ops are refused
    if family == "tflite":  # vouched or not: a manifest proves integrity, never that the file is safe to run
        interpreter = light_tflite_interpreter()
        if interpreter is not None:
            check_prepared_tflite(path, interpreter)
    return verified


def light_tflite_interpreter() -> Any:
    """ai-edge-litert's or tflite-runtime's Interpreter class; None without them (TensorFlow is too heavy here)."""
    from edgeproof.runtime.backends.tflite_interpreter import light_interpreter

    found = light_interpreter()
    return found[0] if found else None


def check_io(path: str | Path, family: str, inp: TensorSpec, out: TensorSpec, height: int, width: int) -> None:
    """Declared shapes an image classifier can have: bounded height/width/channels/classes."""
    dims = [d for d in inp.shape if isinstance(d, int)]
    if any(d < 0 for d in dims) or any(d > MAX_SIDE for d in dims[1:]) or not 0 <= height <= MAX_SIDE \
            or not 0 <= width <= MAX_SIDE:
        raise invalid(path, family, f"input '{inp.name}' declares shape {inp.shape} (preprocess {height}x{width}); "
                      f"height and width must be at most {MAX_SIDE}")
    # One image as predict holds it (float32): the declared dims, or the preprocess size for dynamic ones.
    rest = list(inp.shape[1:])
    declared = int(np.prod(rest, dtype=np.float64)) if all(isinstance(d, int) for d in rest) else 0
    elems = max(declared, height * width * 3)
    if elems * 4 > MAX_TENSOR_BYTES:
        raise invalid(path, family, f"input '{inp.name}' declares shape {inp.shape} (preprocess {height}x{width}): "
                      f"{elems * 4 / 2**30:.3g} GiB per image as float32 (limit {MAX_TENSOR_BYTES >> 20} MiB)")
    try:
        n_cls = score_units(list(out.shape or []))
    except ValueError:  # a feature map: check_outputs refuses it with its own message
        n_cls = None
    if isinstance(n_cls, int) and not 0 < n_cls <= MAX_CLASSES:
        raise invalid(path, family, f"output '{out.name}' declares {n_cls} classes (shape {out.shape})")


def check_used_shapes(path: Path, family: str, be: Any, meta: Any) -> None:
    """The limits on the shapes the runtime will really use: the preprocess size after metadata and overrides.

    A backend resizes a TFLite input to the preprocess size, so a file whose metadata alone said 4200x4200
    passed every check on its declared 64x64 input, then took 7.5 s and 3.67 GB per image.
    """
    pp = meta.preprocess
    check_io(path, family, be.input_spec, be.output_spec, pp.height, pp.width)
    shape = list(be.input_spec.shape)
    if family != "tflite" or len(shape) != 4:
        return
    channels = pp.channels
    used = [1, pp.height, pp.width, channels] if pp.layout == "NHWC" else [1, channels, pp.height, pp.width]
    if [d if isinstance(d, int) and d > 0 else -1 for d in shape[1:]] == used[1:]:
        return  # the declared shape: preflight prepared exactly this
    interpreter = light_tflite_interpreter()
    if interpreter is not None:
        check_prepared_tflite(path, interpreter, used)
