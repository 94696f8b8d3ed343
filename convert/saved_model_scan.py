"""Read a SavedModel's graph, functions included, before TensorFlow loads or calls any of it.

`tf.saved_model.load` already runs code (resource initializers), and convert and parity then call the serving
signature, so this scan reads saved_model.pb as a protobuf and nothing else. It refuses the first op that
edgeproof.model_trust lists (files, Python, network), wherever it sits: the top-level graph or any function of
the library (signatures, the functions they call, loop and branch bodies).

Checkpoint ops (SaveV2, RestoreV2, MergeV2Checkpoints, ...) are part of every SavedModel: tf.saved_model.save
writes a save function and a restore function, which the graph nodes named by the saver_def call. They are
allowed there and only there; the same ops in a signature or in any function something else calls would
write or read other paths, and are refused. (edgeproof never saves the loaded model, and TensorFlow restores
the variables with its own checkpoint reader.)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from edgeproof.model_trust import CHECKPOINT_OPS, refuse, tf_op_risk


def _called(node: Any) -> Iterator[str]:
    """The function names a NodeDef calls through its attributes (PartitionedCall's f, While's body, ...)."""
    for value in node.attr.values():
        if value.HasField("func"):
            yield value.func.name
        if value.HasField("list"):
            yield from (f.name for f in value.list.func)


def _closure(roots: Iterable[str], functions: dict[str, Any]) -> set[str]:
    seen: set[str] = set()
    todo = [r for r in roots if r in functions]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(c for n in functions[name].node_def for c in _called(n) if c in functions and c not in seen)
    return seen


def _attrs(node: Any) -> dict[str, str]:
    return {k: v.s.decode("utf-8", "replace") for k, v in node.attr.items() if v.WhichOneof("value") == "s"}


def _read(path: Path) -> Any:
    from tensorflow.core.protobuf import saved_model_pb2

    sm = saved_model_pb2.SavedModel()
    pb = path / "saved_model.pb"
    if pb.is_file():
        sm.ParseFromString(pb.read_bytes())
    else:
        from google.protobuf import text_format

        text_format.Parse((path / "saved_model.pbtxt").read_text(encoding="utf-8"), sm)
    return sm


def check_saved_model(path: str | Path, trust_model: bool = False) -> list[str]:
    """Every op name of the SavedModel's graphs and functions; UsageError on the first op that reaches
    outside the tensors (see the module docstring), unless trust_model."""
    path = Path(path)
    sm = _read(path)
    names: list[str] = []
    for mg in sm.meta_graphs:
        graph, saver = mg.graph_def, mg.saver_def
        functions = {f.signature.name: f for f in graph.library.function}
        saver_nodes = {t.split(":")[0] for t in (saver.save_tensor_name, saver.restore_op_name) if t}
        scope = saver.filename_tensor_name.rsplit("/", 1)[0] + "/" if "/" in saver.filename_tensor_name else None
        saver_fns = _closure((c for n in graph.node if n.name in saver_nodes for c in _called(n)), functions)
        other_roots = [c for n in graph.node if n.name not in saver_nodes for c in _called(n)]
        other_roots += [f for f in functions if f not in saver_fns]
        checkpoint_ok = saver_fns - _closure(other_roots, functions)
        found = [(n, "the graph", bool(scope) and n.name.startswith(scope)) for n in graph.node]
        for fname, fn in functions.items():
            found += [(n, f"function {fname}", fname in checkpoint_ok) for n in fn.node_def]
        for node, where, saver_owned in found:
            names.append(node.name)
            why = tf_op_risk(node.op, _attrs(node))
            if why is None or trust_model or (node.op in CHECKPOINT_OPS and saver_owned):
                continue
            raise refuse(str(path), node.op, why, where)
    return names
