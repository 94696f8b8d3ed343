"""A time bound on one artifact's evaluation: a model whose inference never returns (an ONNX Loop that
never ends, a hung delegate) gives a failed row, and parity goes on to the rest.

The work runs in a daemon thread. On timeout the backend is asked to cancel (ONNX Runtime's
RunOptions.terminate stops even a Loop); a runtime that cannot be interrupted (LiteRT, OpenCV) leaves
its thread running in the background until the process ends, and the row says so.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

DEFAULT_TIMEOUT_S = 600.0  # load + inference on every parity image + latency, per artifact x backend


class EvaluationTimeout(Exception):
    """The evaluation did not finish within its limit."""


def call_bounded(work: Callable[[Callable[[Any], None]], Any], seconds: float | None) -> Any:
    """work(register) in a daemon thread, at most `seconds` (None/0: no limit); register(model) names what
    to cancel. EvaluationTimeout on timeout; work's own exception is re-raised."""
    if not seconds:
        return work(lambda model: None)
    held: list[Any] = []
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = work(held.append)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=target, name="edgeproof-parity-eval", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        cancelled = any(_cancel(m) for m in held)
        if cancelled:
            thread.join(5.0)
        note = "cancelled" if cancelled and not thread.is_alive() else \
            "the runtime cannot be interrupted: its call goes on in the background until parity ends"
        raise EvaluationTimeout(f"did not finish within {seconds:g} s ({note}); the model may loop forever "
                                "(damaged or hostile file) or the accelerator hung; raise --timeout for a model "
                                "that is really this slow")
    if "error" in result:
        raise result["error"]
    return result.get("value")


def _cancel(model: Any) -> bool:
    try:
        return bool(model.backend.cancel())
    except (AttributeError, RuntimeError, ValueError):  # a stand-in without backend, or one already closed
        return False
