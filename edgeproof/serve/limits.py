"""Process and memory limits of one server: the fd limit, glibc's heap, and the bytes-in-flight budget.

- The open-file limit is raised from the soft to the hard limit at start-up (the common soft 1024
  is less than the connection cap plus what the runtime holds); the connection cap is lowered to fit
  what the hard limit allows, with a warning.
- glibc keeps freed large buffers in its heap when its mmap threshold has grown (it does, after the
  first big free), so 40 concurrent 8 MB bodies left the server at ~490 MB for good. A fixed mmap
  threshold returns each request body to the system when it is freed.
- `Budget`: request bodies and decoded pixels in flight, across all requests (HTTP and gRPC). A
  request that would take it over its limit is answered 503 with Retry-After instead of growing memory.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
import threading
from collections.abc import Callable
from contextlib import contextmanager

log = logging.getLogger(__name__)
FD_RESERVE = 128  # fds kept for the model, the runtime's threads, log files, gRPC
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 256 * 2**10
TRIM_AFTER = 16 * 2**20


def raise_fd_limit(want: int) -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return how many connections it leaves room for."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return want
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, want + FD_RESERVE)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d to %d (%s)", soft, target, exc)
    room = want if soft == resource.RLIM_INFINITY else max(16, soft - FD_RESERVE)
    if room < want:
        log.warning("the open-file limit (%d) leaves room for %d connections, not %d (--max-connections); raise "
                    "it with 'ulimit -n' or LimitNOFILE= in the systemd unit", soft, room, want)
        return room
    return want


def tune_malloc() -> Callable[[], None] | None:
    """glibc only: a fixed mmap threshold, so freed request bodies go back to the system (see the module doc);
    returns malloc_trim, for the budget to call when a burst is over (bodies arrive in 64 KiB pieces that live
    in the heap), or None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt, malloc_trim = libc.mallopt, libc.malloc_trim
    except (OSError, AttributeError):  # musl and others have no mallopt
        return None
    mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    mallopt(M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD)
    return lambda: malloc_trim(0)


class Busy(Exception):
    """The in-flight budget is full (503 + Retry-After)."""


class Budget:
    """Bytes held by requests in flight (bodies, decoded pixels); thread-safe; one per server. When it empties
    after holding TRIM_AFTER bytes or more, `trim` (malloc_trim) hands the freed heap back to the system."""

    def __init__(self, limit: int, trim: Callable[[], None] | None = None) -> None:
        self.limit, self.trim = limit, trim
        self.used = self._high = 0
        self._lock = threading.Lock()

    def take(self, n: int, what: str) -> None:
        with self._lock:
            if self.used > 0 and self.used + n > self.limit:
                raise Busy(f"server busy: {self.used // 2**20} MiB of request data in flight and {what} needs "
                           f"{-(-n // 2**20)} MiB more (--max-inflight {self.limit // 2**20}M); retry shortly")
            self.used += n

    def give(self, n: int) -> None:
        with self._lock:
            self._high = max(self._high, self.used)
            self.used -= n
            trim = self.used == 0 and self._high >= TRIM_AFTER and self.trim is not None
            if trim:
                self._high = 0
        if trim:
            self.trim()

    @contextmanager
    def hold(self, n: int, what: str):
        self.take(n, what)
        try:
            yield
        finally:
            self.give(n)
