"""The decode pool (edgeproof.serve.pool.LifoPool): the last idle thread takes the next job, so a lone stream of
jobs runs on one thread (ThreadPoolExecutor's workers take turns); under load every thread works; results,
exceptions, cancellation and shutdown behave as concurrent.futures promises."""

from __future__ import annotations

import threading
import time

import pytest

from edgeproof.serve.pool import LifoPool


def test_a_lone_stream_of_jobs_runs_on_one_thread_and_a_burst_on_all():
    pool = LifoPool(3, "t")
    try:
        gate = threading.Barrier(3, timeout=5)  # three jobs that can only finish together need three threads
        assert sorted(f.result(5) for f in [pool.submit(gate.wait) for _ in range(3)]) == [0, 1, 2]
        names = []
        for _ in range(30):  # then one job at a time, each after the last finished: the same (warm) thread each time
            time.sleep(0.001)
            names.append(pool.submit(lambda: threading.current_thread().name).result(5))
        assert len(set(names)) == 1, names
    finally:
        pool.shutdown()


def test_results_exceptions_cancellation_and_shutdown():
    pool = LifoPool(1, "t")
    assert pool.submit(pow, 2, 10).result(5) == 1024
    with pytest.raises(ZeroDivisionError):
        pool.submit(lambda: 1 / 0).result(5)
    started, release = threading.Event(), threading.Event()
    first = pool.submit(lambda: started.set() or release.wait(5))
    assert started.wait(5)
    queued = pool.submit(pow, 3, 2)
    pool.shutdown(wait=False, cancel_futures=True)  # the running job finishes, the queued one is cancelled
    release.set()
    assert first.result(5) is True and queued.cancelled()
    with pytest.raises(RuntimeError, match="shut down"):
        pool.submit(pow, 2, 2)
    pool.shutdown(wait=True)
    with pytest.raises(ValueError):
        LifoPool(0)
