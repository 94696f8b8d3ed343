"""Progress events: the library says how far long work has come; the caller decides how to show it.

A library function takes `progress: ProgressCallback | None` and reports through a `Progress`:

    with Progress(progress) as prog:          # "start" ... "stop" around the work
        task = prog.add_task("converting", total=len(formats))
        prog.update(task, description="converting tflite-int8")
        prog.advance(task)

Each call becomes a `ProgressEvent` for the callback; with no callback nothing happens. The CLI turns
events into rich progress bars (edgeproof.cli.console.progress_bars); an application can log them,
send them to a UI, or ignore them. The library itself never draws anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class ProgressEvent:
    """One change: kind "start"/"stop" bracket a piece of work; "task" carries a task's new state."""

    kind: Literal["start", "task", "stop"]
    task: int | None = None
    description: str = ""
    completed: float = 0.0
    total: float | None = None


ProgressCallback = Callable[[ProgressEvent], None]


@dataclass
class _Task:
    """One progress bar's state (description, done, total)."""
    description: str
    completed: float
    total: float | None


class Progress:
    """Tasks with rich-like `add_task` / `update` / `advance`, reported as events to `callback`.

    `callback` may also be a bool from older callers: True/False/None all mean "no events"
    (drawing bars is the CLI's job, which passes its own callback)."""

    def __init__(self, callback: ProgressCallback | bool | None = None) -> None:
        self._callback = callback if callable(callback) else None
        self._tasks: dict[int, _Task] = {}

    def __enter__(self) -> Progress:
        self._emit(ProgressEvent("start"))
        return self

    def __exit__(self, *exc: Any) -> None:
        self._emit(ProgressEvent("stop"))

    def _emit(self, event: ProgressEvent) -> None:
        if self._callback is not None:
            self._callback(event)

    def _emit_task(self, task: int) -> None:
        t = self._tasks[task]
        self._emit(ProgressEvent("task", task, t.description, t.completed, t.total))

    def add_task(self, description: str, total: float | None = None, completed: float = 0) -> int:
        task = len(self._tasks)
        self._tasks[task] = _Task(description, float(completed), None if total is None else float(total))
        self._emit_task(task)
        return task

    def update(self, task: int, *, description: str | None = None, completed: float | None = None,
               total: float | None = None, advance: float | None = None) -> None:
        t = self._tasks[task]
        if description is not None:
            t.description = description
        if total is not None:
            t.total = float(total)
        if completed is not None:
            t.completed = float(completed)
        if advance:
            t.completed += advance
        self._emit_task(task)

    def advance(self, task: int, advance: float = 1) -> None:
        self.update(task, advance=advance)

    def completed(self, task: int) -> float:
        return self._tasks[task].completed
