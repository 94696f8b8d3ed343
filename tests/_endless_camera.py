"""An endless fake camera for the signal tests' child processes (cv2.VideoCapture's interface)."""

from __future__ import annotations

import sys
import time

from _runtime_models import solid


class Endless:
    """Green frames every `delay` s, bounded at 60 s so a lost signal fails a test instead of hanging it;
    release() prints 'released' on `stream` so the parent can check the capture was let go."""

    def __init__(self, delay: float = 0.002, stream=sys.stdout) -> None:
        self.t0, self.delay, self.stream = time.monotonic(), delay, stream

    def isOpened(self):
        return True

    def get(self, prop):
        return 30.0

    def read(self):
        time.sleep(self.delay)
        return time.monotonic() - self.t0 < 60, solid("green")

    def release(self):
        print("released", file=self.stream, flush=True)
