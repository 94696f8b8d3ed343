"""Turn a converter exception into one line that names the format and, when the converter says,
the layer and the op that could not be converted."""

from __future__ import annotations

import re

from edgeproof.errors import EdgeproofError

_LOC = re.compile(r'loc\((.*?)\)\)?:')
_QUOTED = re.compile(r'"([^"]+)"')
_TF_OP = re.compile(r"'((?:tf|tfl|mhlo|stablehlo)\.[A-Za-z0-9_]+)' op")
_TF_OP_MSG = re.compile(r"'(?:tf|tfl)\.[A-Za-z0-9_]+' op [^\n]+")
_TF2ONNX_OPS = re.compile(r"[Uu]nsupported ops?:?\s*(Counter\(\{[^}]*\}\)|\[[^\]]*\]|[A-Za-z0-9_, ]+)")


def layer_from_location(loc: str) -> str:
    """'functional_1/my_conv_1/Conv2D' -> 'my_conv' (Keras adds a _N suffix inside functions)."""
    parts = [p for p in loc.split(";")[0].split("/") if p]
    name = parts[1] if len(parts) > 2 else parts[0]
    return re.sub(r"_\d+$", "", name)


def _layer(text: str) -> str | None:
    """The Keras layer in the first MLIR location that looks like model/layer/op."""
    for loc in _LOC.finditer(text):
        for q in _QUOTED.findall(loc.group(1)):
            q = q.split("@")[0]
            if "/" in q and not q.startswith("StatefulPartitionedCall"):
                return layer_from_location(q)
    return None


def failure_reason(fmt: str, exc: BaseException) -> str:
    """'<format>: <what failed> [layer 'x', op 'y']: <first meaningful line>' (≤ ~400 chars)."""
    text = str(exc).strip()
    if isinstance(exc, EdgeproofError):
        return text if text.startswith(f"{fmt}:") else f"{fmt}: {text}"
    where = []
    layer = _layer(text)
    op = _TF_OP.search(text)
    if layer:
        where.append(f"layer '{layer}'")
    if op:
        where.append(f"op '{op.group(1)}'")
    ops = _TF2ONNX_OPS.search(text)
    if ops and not op:
        where.append(f"unsupported op(s) {ops.group(1).strip()}")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith(("<unknown>:0: note",))]
    first = next((ln for ln in lines if "error" in ln.lower()), lines[0] if lines else "")
    op_msg = _TF_OP_MSG.search(text)  # MLIR: "... loc(...): error: 'tf.X' op is neither a custom op ..."
    if op_msg:
        first = op_msg.group(0)
    first = re.sub(r"\s+", " ", first)[:260]
    head = f"{fmt}: {type(exc).__name__}"
    return f"{head} ({', '.join(where)}): {first}" if where else f"{head}: {first}"
