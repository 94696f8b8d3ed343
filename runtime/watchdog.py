"""A time bound on each inference call: a hostile or damaged model can loop forever inside native code.

Interpreters give Python no way to interrupt a running `invoke()`/`session.run()` (a TFLite WHILE
whose condition never turns false, a hung delegate driver), and a thread blocked in native code
cannot be stopped. So `edgeproof run` arms this watchdog around every `Model.predict`: a daemon
thread that, when one call outlives its limit, calls `on_timeout` (the CLI prints one error line
and ends the process with os._exit, the only way out of a native hang).

Per call it costs two attribute writes; the thread wakes at most a few times a second.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

DEFAULT_SECONDS = 60.0  # far above any real per-image inference (seconds on a Pi for big models)


class Watchdog:
    """`with watchdog.watch(what): ...` calls on_timeout(what, seconds) from a daemon thread if the block
    runs longer than `seconds`. One watched block at a time (inference runs on one thread)."""

    def __init__(self, seconds: float, on_timeout: Callable[[str, float], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        if seconds <= 0:
            raise ValueError(f"watchdog limit must be > 0 seconds; got {seconds}")
        self.seconds, self.on_timeout, self.clock = float(seconds), on_timeout, clock
        self._started: float | None = None
        self._what = ""
        self._stop = threading.Event()
        self.fired = False
        self._thread = threading.Thread(target=self._loop, name="edgeproof-watchdog", daemon=True)
        self._thread.start()

    def watch(self, what: str) -> _Watch:
        return _Watch(self, what)

    def _loop(self) -> None:
        tick = min(0.25, self.seconds / 4)
        while not self._stop.wait(tick):
            started = self._started
            if started is not None and self.clock() - started > self.seconds and not self.fired:
                self.fired = True
                self.on_timeout(self._what, self.seconds)

    def close(self) -> None:
        """Stop watching: the daemon thread wakes on the event and ends by itself (no join, which only made the
        caller wait for that thread to be scheduled: milliseconds at the end of a one-image run on a busy machine)."""
        self._stop.set()

    def __enter__(self) -> Watchdog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Watch:
    __slots__ = ("dog", "what")

    def __init__(self, dog: Watchdog, what: str) -> None:
        self.dog, self.what = dog, what

    def __enter__(self) -> None:
        self.dog._what = self.what
        self.dog._started = self.dog.clock()

    def __exit__(self, *exc) -> None:
        self.dog._started = None
