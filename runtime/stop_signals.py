"""SIGTERM stops a run the way Ctrl-C does.

systemd, `docker stop` and Kubernetes send SIGTERM, and by default it kills Python on the spot: no
summary, the camera not released, a --save video left without its index. Inside `terminate_as_interrupt()`
the first SIGTERM raises `Terminated` (a KeyboardInterrupt) in the main thread, so everything that
already handles Ctrl-C (the pipeline's clean stop, the savers' finally blocks) handles it too; a second
SIGTERM while that cleanup runs ends the process at once, as the default would.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

EXIT_TERMINATED = 128 + signal.SIGTERM  # 143: what a shell reports for a process ended by SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: stop cleanly, as on Ctrl-C."""


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into `Terminated` for the duration (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = [False]

    def on_term(signum, frame):
        if fired[0]:  # a second SIGTERM during the clean stop: do what the default does
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        fired[0] = True
        raise Terminated

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
