"""The batcher in-process: never two calls at once on one interpreter, batches within --max-batch, rows to owners."""

from __future__ import annotations

import asyncio
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from edgeproof.errors import UsageError
from edgeproof.serve.engine import Engine, Unavailable


class FakeModel:
    """predict returns each row's id (x[:, 0, 0, 0]) as its score, and records concurrency and batch sizes."""

    def __init__(self, batch_ok: bool = True, delay: float = 0.002) -> None:
        self.backend = SimpleNamespace(batch_ok=batch_ok)
        self.delay, self.active, self.max_active, self.sizes = delay, 0, 0, []
        self.lock = threading.Lock()
        self.closed = False
        self.path = SimpleNamespace(name="fake.onnx")
        self.preprocess = SimpleNamespace(height=2, width=2, channels=3)
        self.backend_name = "fake"

    def predict(self, x: np.ndarray) -> np.ndarray:
        with self.lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            if (x[:, 0, 0, 0] < 0).any():
                raise UsageError("negative id")
            if (x[:, 0, 0, 0] == 666).any():  # "hangs" (a sleep: the thread comes back, but too late)
                time.sleep(1.5)
            time.sleep(self.delay)
            self.sizes.append(len(x))
            return np.stack([x[:, 0, 0, 0], -x[:, 0, 0, 0]], axis=1)
        finally:
            with self.lock:
                self.active -= 1

    def close(self) -> None:
        self.closed = True


def _x(ids) -> np.ndarray:
    x = np.zeros((len(ids), 2, 2, 3), np.float32)
    x[:, 0, 0, 0] = ids
    return x


async def _many(engine: Engine, groups: list[list[int]], pool=None):
    async def one(ids):
        await asyncio.sleep(0)
        if pool is not None and ids[0] % 2:  # half decoded in a pool (which may run them on its own thread)
            return ids, await engine.infer_from(len(ids), lambda: _x(ids), pool)
        return ids, await engine.infer(_x(ids))

    return await asyncio.gather(*(one(g) for g in groups), return_exceptions=True)


def _run(engine: Engine, groups, pool=None):
    async def main():
        engine.start(asyncio.get_running_loop())
        try:
            return await _many(engine, groups, pool)
        finally:
            engine.stop()

    return asyncio.run(main())


@pytest.mark.parametrize("workers,max_batch", [(1, 8), (3, 8), (2, 1)])
def test_each_interpreter_runs_one_call_at_a_time_and_rows_go_back_to_their_request(workers, max_batch):
    from concurrent.futures import ThreadPoolExecutor

    models = [FakeModel() for _ in range(workers)]
    engine = Engine(models, max_batch=max_batch, batch_timeout_ms=5, max_queue=10_000, infer_timeout=0)
    groups = [[i] for i in range(1, 150)] + [[1001 + 2 * i, 2000 + i, 3000 + i] for i in range(20)]
    with ThreadPoolExecutor(4) as pool:
        results = _run(engine, groups, pool)
    for ids, res in results:
        assert res.probs[:, 0].tolist() == ids  # every request got exactly its own rows
        assert 1 <= res.batch_size <= max(max_batch, 3)
    assert all(m.max_active == 1 for m in models)  # never concurrent on one interpreter
    if max_batch > 1:
        assert max(s for m in models for s in m.sizes) > 1  # and requests were coalesced
    assert all(m.closed for m in models)


def test_a_backend_that_cannot_batch_gets_one_image_per_call():
    m = FakeModel(batch_ok=False)
    engine = Engine([m], max_batch=8, batch_timeout_ms=5, infer_timeout=0)
    assert engine.max_batch == 1
    results = _run(engine, [[i] for i in range(1, 20)] + [[50, 51, 52]])
    assert all(res.probs[:, 0].tolist() == ids for ids, res in results)
    assert set(m.sizes) == {1}


def test_one_bad_request_does_not_fail_its_batch_neighbours():
    m = FakeModel()
    engine = Engine([m], max_batch=16, batch_timeout_ms=20, infer_timeout=0)
    results = _run(engine, [[1], [2], [-3], [4]])
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 1 and "negative id" in str(errors[0])
    assert sorted(int(res.probs[0, 0]) for r in results if not isinstance(r, BaseException) for res in [r[1]]) == \
        [1, 2, 4]


def test_a_full_queue_is_unavailable_not_unbounded():
    m = FakeModel(delay=0.05)
    engine = Engine([m], max_batch=1, batch_timeout_ms=0, max_queue=4, infer_timeout=0)
    results = _run(engine, [[i] for i in range(1, 30)])
    busy = [r for r in results if isinstance(r, Unavailable)]
    assert busy and "server busy" in str(busy[0])
    assert len(results) - len(busy) >= 4


def test_a_lone_request_does_not_wait_for_the_batch_timeout():
    engine = Engine([FakeModel(delay=0)], max_batch=8, batch_timeout_ms=2000, infer_timeout=0)
    t0 = time.perf_counter()
    (ids, res), = _run(engine, [[7]])
    assert res.probs[0, 0] == 7 and time.perf_counter() - t0 < 1.0


def test_a_call_over_the_watchdog_limit_answers_503_and_marks_not_ready():
    m = FakeModel(delay=0)
    engine = Engine([m], max_batch=1, batch_timeout_ms=0, infer_timeout=0.3)

    async def main():
        engine.start(asyncio.get_running_loop())
        try:
            first = await _many(engine, [[1]])
            hung = await _many(engine, [[666]])
            after = await _many(engine, [[2]])
            return first, hung, after, engine.ready, engine.not_ready_reason
        finally:
            engine.stop()

    t0 = time.perf_counter()
    first, hung, after, ready, why = asyncio.run(main())
    assert first[0][1].probs[0, 0] == 1
    assert isinstance(hung[0], Unavailable) and "did not finish within 0.3 s" in str(hung[0])
    assert time.perf_counter() - t0 < 1.4  # answered when the limit passed, not when the call came back
    assert not ready and "did not finish within 0.3 s" in why
    assert isinstance(after[0], Unavailable) and "no healthy interpreter" in str(after[0])
