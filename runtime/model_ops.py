"""The operators a .tflite or .onnx file names that run more than tensor math, refused before any runtime opens it.

A model is a program (edgeproof.model_trust). In a .tflite, a Flex op (custom code 'Flex<TF op>', written with
SELECT_TF_OPS) runs a TensorFlow kernel: full TensorFlow's interpreter, the last rung of the interpreter
ladder, runs FlexWriteFile as readily as FlexErf. A Flex op whose TensorFlow op reaches files, Python or the
network is refused. Other custom ops run only a kernel the runtime registers (LiteRT registers none of its own
but a few signal-processing ones; the Edge TPU delegate claims edgetpu-custom-op), so an unknown one fails to
resolve and is reported by the load.

In an .onnx, an operator of a domain none of our runtimes implements (edgeproof.model_trust.ONNX_DOMAINS) runs
only through a native custom-op library; the model's own functions define domains of their own, which expand
into standard operators and are allowed. Such a file is refused. `trust_model` (--trust-model) skips both.
"""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path

from edgeproof.errors import UsageError
from edgeproof.model_trust import ONNX_DOMAINS, refuse, tf_op_risk


def tflite_custom_codes(path: str | Path) -> list[str]:
    """The custom_code of every operator code of a .tflite (the structural check has already walked it)."""
    from edgeproof.runtime.model_check import FlatBuffer, _Bad

    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        fb = FlatBuffer(buf)
        codes: list[str] = []
        try:
            for code in fb.tables(fb.table(0), 1):
                start, length = fb.vector(code, 1, 1)
                if length:
                    codes.append(bytes(buf[start:start + length]).decode("utf-8", "replace"))
        except (_Bad, struct.error):
            pass  # check_tflite reports a damaged table
        return codes


# message -> {field number: what it is}; only the fields on a path to an operator's domain
_SCHEMA = {"model": {7: "graph", 25: "function"}, "graph": {1: "node"}, "function": {7: "node", 10: "domain!"},
           "node": {4: "op!", 5: "attribute", 7: "domain"}, "attribute": {6: "graph", 11: "graph"}}


def _walk(buf, kind: str, a: int, b: int, depth: int, out: dict[str, set[str]]) -> None:
    from edgeproof.runtime.onnx_external import _fields

    if depth > 64:
        return
    op = domain = None
    for number, x, y in _fields(buf, a, b):
        what = _SCHEMA[kind].get(number)
        if what in ("domain", "op!"):
            value = bytes(buf[x:y]).decode("utf-8", "replace")
            domain, op = (value, op) if what == "domain" else (domain, value)
        elif what == "domain!":
            out.setdefault("defined", set()).add(bytes(buf[x:y]).decode("utf-8", "replace"))
        elif what:
            _walk(buf, what, x, y, depth + 1, out)
    if kind == "node":
        out.setdefault(domain or "", set()).add(op or "?")


def onnx_domains(path: str | Path) -> tuple[dict[str, set[str]], set[str]]:
    """({operator domain: op types}, domains the model's own functions define), read from the protobuf."""
    from edgeproof.runtime.onnx_external import _End

    out: dict[str, set[str]] = {}
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size:
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                try:
                    _walk(buf, "model", 0, size, 0, out)
                except _End:
                    pass  # the loader reports a damaged protobuf
    return out, out.pop("defined", set())


def check_ops(path: str | Path, family: str, trust_model: bool = False) -> None:
    """UsageError naming the first op that runs more than tensor math (see the module docstring)."""
    if trust_model:
        return
    name = Path(path).name
    if family == "tflite":
        for code in tflite_custom_codes(path):
            if code.startswith("Flex"):
                why = tf_op_risk(code[4:])
                if why:
                    raise refuse(name, code, f"is the TensorFlow op {code[4:]} run through Flex and {why}")
        return
    used, defined = onnx_domains(path)
    for domain in sorted(set(used) - ONNX_DOMAINS - defined):
        ops = ", ".join(sorted(used[domain])[:3])
        raise UsageError(f"model '{name}' uses operators of the custom domain '{domain}' ({ops}), which only a "
                         "native custom-op library runs: a model is a program, and edgeproof runs only operators "
                         "its runtimes implement themselves; if you trust this model and the library, pass "
                         "--trust-model to run it anyway")

