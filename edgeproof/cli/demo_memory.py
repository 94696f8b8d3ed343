"""The demo's memory figures: resident memory of the whole process tree (the demo, its stage processes and
theirs: parity's Keras child, the guarded trial loads of runtime.guard), sampled while each stage runs.

Each stage process reports its own peak (ru_maxrss), which alone would miss the children it starts while it
is itself resident. So a thread sums VmRSS over the demo's process tree (Linux /proc) every INTERVAL_S; a
stage's figure is the larger of that sampled sum and its process's own peak (which catches a spike between
two samples). The sum is an upper bound: pages two processes share (libraries of a forked child) count
twice. A child caught between vfork and exec shares its parent's memory outright; it is counted once.
Without /proc only the per-process peaks are known, and the line says so.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

INTERVAL_S = 0.05
PROC = Path("/proc")


def _status(pid: int) -> tuple[int, int, int] | None:
    """(parent pid, VmRSS KiB, VmSize KiB) of a live process, or None (gone, a zombie, not readable)."""
    try:
        text = (PROC / str(pid) / "status").read_text()
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    try:
        return (int(fields["PPid"]), int(fields["VmRSS"].split()[0]), int(fields["VmSize"].split()[0]))
    except (KeyError, ValueError, IndexError):  # a zombie has no Vm* lines
        return None


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tasks = list((PROC / str(pid) / "task").iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return out


def tree_rss_kb(root: int) -> int:
    """Sum of VmRSS over `root` and every descendant (a vfork child not yet exec'd counted once)."""
    seen: dict[int, tuple[int, int, int]] = {}
    todo = [root]
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        st = _status(pid)
        if st is None:
            continue
        seen[pid] = st
        todo += _children(pid)
    total = 0
    for st in seen.values():
        ppid, rss, size = st
        parent = seen.get(ppid)
        if parent is not None and (parent[1], parent[2]) == (rss, size):  # vfork: the parent's own pages
            continue
        total += rss
    return total


class TreeMemory:
    """Peak resident memory of this process's tree, overall and per named stage (MiB)."""

    def __init__(self) -> None:
        self.sampled = (PROC / str(os.getpid()) / "task").is_dir() and \
            (PROC / str(os.getpid()) / "task" / str(os.getpid()) / "children").exists()
        self.stages: dict[str, float] = {}  # stage -> peak MiB (sampled tree sum, or the stage process's own)
        self.single: dict[str, float] = {}  # stage -> its largest single process's peak MiB (ru_maxrss)
        self._current: str | None = None
        self._lock = threading.Lock()

    def _record(self) -> None:
        mib = tree_rss_kb(os.getpid()) / 1024
        with self._lock:
            if self._current is not None:
                self.stages[self._current] = max(self.stages.get(self._current, 0.0), mib)

    def _sample(self, stop: threading.Event) -> None:
        while not stop.wait(INTERVAL_S):
            self._record()

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        stop = threading.Event()
        with self._lock:
            self._current = name
            self.stages.setdefault(name, 0.0)
        thread = threading.Thread(target=self._sample, args=(stop,), name="edgeproof-demo-memory", daemon=True)
        if self.sampled:
            thread.start()
        try:
            yield
        finally:
            stop.set()
            if self.sampled:
                thread.join()
                self._record()  # a stage shorter than one interval still has its figure
            with self._lock:
                self._current = None

    def process_peak(self, name: str, peak_kb: int) -> None:
        """A stage process's own peak (ru_maxrss): the stage's figure is never below it."""
        mib = peak_kb / 1024
        self.single[name] = max(self.single.get(name, 0.0), mib)
        self.stages[name] = max(self.stages.get(name, 0.0), mib)

    def line(self) -> str:
        """'peak memory: ...' for the demo's summary."""
        import resource

        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        stages = {**self.stages, "demo": max(self.stages.get("demo", 0.0), own)}
        where = max(stages, key=stages.__getitem__)
        how = (f"sum over the demo's processes, sampled every {INTERVAL_S * 1000:.0f} ms" if self.sampled
               else "largest single process; no /proc here to sum the process tree")
        single = max(self.single.values(), default=own)
        return (f"peak memory: {stages[where]:.0f} MiB resident ({how}; in {where}); per stage: "
                + ", ".join(f"{k} {v:.0f} MiB" for k, v in self.stages.items())
                + f"; largest single process {max(single, own):.0f} MiB")
