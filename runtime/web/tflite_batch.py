"""Fix a .tflite file's dynamic batch dimension to 1, in place in its bytes, for LiteRT.js.

LiteRT.js 2.5 refuses to run a model whose input signature is [-1, H, W, C] ("TensorBuffer ranked tensor type
Float32[1, 32, 32, 3] does not match expected ranked tensor type Float32[-1, 32, 32, 3]"), and its JavaScript
API has no call to resize an input. Every edgeproof artifact has a dynamic batch (the Keras input's None).
The fix rewrites only the int32s of each tensor's `shape_signature` whose first entry is -1 (batch) to 1, the
shape the Python runtimes resize to anyway: same length, same weights and ops, the appended metadata untouched.
A minimal FlatBuffers walk (Model.subgraphs[].tensors[].shape_signature) keeps it free of schema packages.
"""

from __future__ import annotations

import struct

_MODEL_SUBGRAPHS, _SUBGRAPH_TENSORS, _TENSOR_SHAPE_SIGNATURE = 2, 0, 7


def _u32(buf: bytes | bytearray, pos: int) -> int:
    return struct.unpack_from("<I", buf, pos)[0]


def _field(buf: bytes | bytearray, table: int, index: int) -> int | None:
    """Absolute position of field `index` of the table at `table`, or None when absent."""
    vtable = table - struct.unpack_from("<i", buf, table)[0]
    vt_size = struct.unpack_from("<H", buf, vtable)[0]
    if 4 + 2 * index >= vt_size:
        return None
    off = struct.unpack_from("<H", buf, vtable + 4 + 2 * index)[0]
    return table + off if off else None


def _vector(buf: bytes | bytearray, pos: int) -> tuple[int, int]:
    """(first element position, length) of the vector a field at `pos` points to."""
    start = pos + _u32(buf, pos)
    return start + 4, _u32(buf, start)


def _tables(buf: bytes | bytearray, table: int, index: int) -> list[int]:
    """Positions of the tables in the vector field `index` of the table at `table` (none when absent)."""
    pos = _field(buf, table, index)
    if pos is None:
        return []
    first, n = _vector(buf, pos)
    return [first + 4 * i + _u32(buf, first + 4 * i) for i in range(n)]


def fix_batch(data: bytes) -> tuple[bytes, int]:
    """(the bytes with every tensor's leading -1 in shape_signature set to 1, how many tensors changed)."""
    buf = bytearray(data)
    changed = 0
    for subgraph in _tables(buf, _u32(buf, 0), _MODEL_SUBGRAPHS):
        for tensor in _tables(buf, subgraph, _SUBGRAPH_TENSORS):
            sig = _field(buf, tensor, _TENSOR_SHAPE_SIGNATURE)
            if sig is None:
                continue
            first, n = _vector(buf, sig)
            if n and struct.unpack_from("<i", buf, first)[0] == -1:
                struct.pack_into("<i", buf, first, 1)
                changed += 1
    return bytes(buf), changed
