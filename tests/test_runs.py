"""The runner: shared in-flight runs, a bounded queue (503 beyond it), a byte-bounded LRU cache."""

import asyncio
import threading

import pytest

from app.runs import Busy, Runner, TraceCache


def test_cache_evicts_least_recent_by_bytes():
    c = TraceCache(100)
    c.put("a", 1, 40)
    c.put("b", 2, 40)
    assert c.get("a") == 1  # a is now the most recent
    c.put("c", 3, 40)
    assert c.get("b") is None and c.get("a") == 1 and c.get("c") == 3
    assert c.bytes == 80
    c.put("huge", 4, 1000)
    assert c.get("huge") is None and c.bytes == 80


def test_identical_requests_share_one_run_and_extra_runs_get_busy():
    gate = threading.Event()
    calls = []

    def slow(key):
        def fn():
            calls.append(key)
            gate.wait(5)
            return key

        return fn

    async def scenario():
        r = Runner(max_concurrent=1, max_queued=1, cache_bytes=10_000)
        same = [asyncio.create_task(r.get("x", slow("x"), lambda v: 1)) for _ in range(5)]
        other = asyncio.create_task(r.get("y", slow("y"), lambda v: 1))
        await asyncio.sleep(0.1)
        with pytest.raises(Busy):
            await r.get("z", slow("z"), lambda v: 1)  # 1 running + 1 queued: full
        gate.set()
        results = await asyncio.gather(*same, other)
        assert results == ["x"] * 5 + ["y"]
        assert calls == ["x", "y"] and r.computed == 2
        assert await r.get("x", slow("never"), lambda v: 1) == "x"  # from the cache
        assert r.pending == 0

    asyncio.run(scenario())


def test_a_failing_run_reaches_its_waiters_and_frees_its_slot():
    async def scenario():
        r = Runner(max_concurrent=1, max_queued=0, cache_bytes=10)

        def boom():
            raise ValueError("bad")

        with pytest.raises(ValueError):
            await r.get("k", boom, lambda v: 1)
        assert r.pending == 0 and await r.get("k", lambda: 5, lambda v: 1) == 5

    asyncio.run(scenario())
