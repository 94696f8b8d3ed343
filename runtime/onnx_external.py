"""The external-data files an ONNX model names, read from its protobuf without the onnx package.

A tensor can keep its bytes in another file (`external_data` location). A hostile model names
`../secret.bin` or `/etc/passwd`: OpenCV DNN and OpenVINO open it as weights, and `inspect` used to
report "runtime opencv: ok". So every location is checked here, before any library opens the model:
it must be a relative path that stays inside the model's folder (symlinks resolved).

The walk follows only the fields that can hold tensors (graph initializers, sparse initializers, node
attributes, subgraphs and functions) and skips everything else by length, so it costs one pass over
the file's bytes. A file that is not a valid protobuf just ends the walk: the loader reports it.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from pathlib import Path

# message -> {field number: message type of that field}; only fields on a path to a TensorProto
_SCHEMA: dict[str, dict[int, str]] = {
    "model": {7: "graph", 25: "function"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "function": {7: "node"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
    "tensor": {13: "entry"},
}
_MAX_DEPTH = 64


class _End(Exception):
    """Malformed bytes: stop walking."""


def _varint(buf, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _End
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def _fields(buf, pos: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(field number, start, end) of each length-delimited field in buf[pos:end]; others are skipped."""
    while pos < end:
        key, pos = _varint(buf, pos, end)
        wire = key & 7
        if wire == 0:
            _, pos = _varint(buf, pos, end)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            n, pos = _varint(buf, pos, end)
            if pos + n > end:
                raise _End
            yield key >> 3, pos, pos + n
            pos += n
        else:
            raise _End
    if pos > end:
        raise _End


def _locations(buf, kind: str, pos: int, end: int, depth: int) -> Iterator[str]:
    if depth > _MAX_DEPTH:
        raise _End
    if kind == "entry":
        key = value = None
        for number, a, b in _fields(buf, pos, end):
            if number == 1:
                key = bytes(buf[a:b])
            elif number == 2:
                value = bytes(buf[a:b])
        if key == b"location" and value is not None:
            yield value.decode("utf-8", errors="replace")
        return
    schema = _SCHEMA[kind]
    for number, a, b in _fields(buf, pos, end):
        if number in schema:
            yield from _locations(buf, schema[number], a, b, depth + 1)


def external_locations(path: str | Path) -> list[str]:
    """Every external-data location the model's tensors name (as written in the file)."""
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size == 0:
            return []
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            found: list[str] = []
            try:
                for loc in _locations(buf, "model", 0, size, 0):
                    found.append(loc)
            except _End:
                pass
            return found


def outside_folder(path: str | Path) -> str | None:
    """The first external-data location that is absolute or leaves the model's folder, else None."""
    folder = Path(os.path.abspath(path)).parent.resolve()  # runtimes look beside the path they were given
    for loc in external_locations(path):
        target = (folder / loc).resolve()
        if not loc or os.path.isabs(loc) or ".." in Path(loc).parts or "\x00" in loc \
                or not target.is_relative_to(folder):
            return loc
    return None
