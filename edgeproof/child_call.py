"""fn(*args) in a fresh (spawned) Python process: its libraries and their memory go away when it ends.

Used where one step needs a heavy library the rest of the work does not: the demo runs each stage in its own
process, and parity computes the Keras side (TensorFlow, about 750 MiB resident) in one, so the process that
loads every runtime never holds TensorFlow too. `fn` and `args` must pickle (a module-level function, arrays,
paths); the child's exception is raised in the caller as it was, or as an EdgeproofError with its text when it
does not pickle.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ChildResult:
    value: Any
    peak_kb: int  # the child's own peak resident memory (ru_maxrss, KiB on Linux)


def _child_main(conn, fn: Callable, args: tuple) -> None:
    """In the child: run it, send ("ok", result, peak RSS KB) or ("error", exception, peak RSS KB)."""
    import resource

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        out: tuple = ("ok", fn(*args))
    except Exception as exc:  # noqa: BLE001 - handed to the parent, which raises it as the call's error
        out = ("error", exc)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        message = pickle.dumps((*out, peak_kb))
        pickle.loads(message)  # an exception whose __init__ does not take its args back would fail in the parent
    except Exception:  # noqa: BLE001 - a result or exception that does not round-trip goes as its text
        from edgeproof.errors import EdgeproofError

        message = pickle.dumps(("error", EdgeproofError(f"{type(out[1]).__name__}: {out[1]}"), peak_kb))
    conn.send_bytes(message)
    conn.close()


def call_in_child(fn: Callable, *args: Any, name: str, what: str) -> ChildResult:
    """fn(*args) in a spawned process named `name`; `what` says in an error what to run alone to see why it
    ended without a result (killed, out of memory, a crash in native code)."""
    import multiprocessing

    from edgeproof.errors import EdgeproofError

    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child_main, args=(child, fn, args), name=name)
    proc.start()
    child.close()
    try:
        got = pickle.loads(parent.recv_bytes())
    except EOFError:
        got = None
    finally:
        parent.close()
    proc.join()
    if got is None:
        raise EdgeproofError(f"{name}: the process ended without a result (exit code {proc.exitcode}); {what}")
    status, value, peak_kb = got
    if status == "error":
        raise value
    return ChildResult(value, int(peak_kb))
