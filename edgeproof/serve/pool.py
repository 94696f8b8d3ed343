"""The decode pool: a thread pool whose most recently idle thread takes the next job.

ThreadPoolExecutor's idle workers all wait on one queue and take turns, so at low load consecutive
requests decode and (on the engine's fast path) run the interpreter on alternating threads, each
with cold caches and its own runtime state: at concurrency 1 on the `dense` model of
benchmarks/serve_load.py the inference work was split over two threads and cost 7 % more CPU than
the bare handler's one (anyio's pool, like this one, hands the next job to the last idle thread).
Here a lone stream of requests is served by one thread; under load every thread works.
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Executor, Future


class LifoPool(Executor):
    def __init__(self, max_workers: int, thread_name_prefix: str = "edgeproof-pool") -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be >= 1; got {max_workers}")
        self._max, self._prefix = max_workers, thread_name_prefix
        self._lock = threading.Lock()
        self._jobs: deque = deque()
        self._idle: list[threading.Event] = []  # a stack: the last worker to go idle is woken first
        self._threads: list[threading.Thread] = []
        self._shutdown = False

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new work after the pool was shut down")
            self._jobs.append((future, fn, args, kwargs))
            if self._idle:
                self._idle.pop().set()
            elif len(self._threads) < self._max:
                t = threading.Thread(target=self._work, name=f"{self._prefix}_{len(self._threads)}", daemon=True)
                self._threads.append(t)
                t.start()
        return future

    def _work(self) -> None:
        wake = threading.Event()
        while True:
            with self._lock:
                job = self._jobs.popleft() if self._jobs else None
                if job is None:
                    if self._shutdown:
                        return
                    wake.clear()
                    self._idle.append(wake)
            if job is None:
                wake.wait()
                continue
            self._run(*job)

    @staticmethod
    def _run(future: Future, fn, args, kwargs) -> None:
        """One job; its data (the request's bytes and arrays) is dropped on return, not held while idle."""
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller through its future, as in ThreadPoolExecutor
            future.set_exception(exc)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                while self._jobs:
                    self._jobs.popleft()[0].cancel()
            for wake in self._idle:
                wake.set()
            self._idle.clear()
            threads = list(self._threads)
        if wait:
            for t in threads:
                if t is not threading.current_thread():
                    t.join()
