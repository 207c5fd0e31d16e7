"""The shared trace cache (app/shared.py): traces through .npz + JSON and back (never pickle), the
byte budget in Redis, and Runners of two "processes" computing one run once."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import threading

import numpy as np
import pytest
import redis.asyncio as aioredis

from app import shared
from app.capture import diffusion, text, vision
from app.images import gallery_picture
from app.registry import load_gpt2, load_sd, load_vit
from app.runs import Runner
from app.shared import CorruptPayload, RedisTraces, pack, unpack
from tests.conftest import free_port


def assert_same(a, b, path="trace"):
    """Field by field, arrays by value and dtype; `derived` (recomputed per process) aside."""
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape, path
        np.testing.assert_array_equal(a, b, err_msg=path)
    elif dataclasses.is_dataclass(a):
        assert type(a) is type(b), path
        for f in dataclasses.fields(a):
            if f.name != "derived":
                assert_same(getattr(a, f.name), getattr(b, f.name), f"{path}.{f.name}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            assert_same(a[k], b[k], f"{path}.{k}")
    else:
        assert a == b and type(a) is type(b), path


def small_trace(n_floats: int, label: str = "t") -> text.TextTrace:
    return text.TextTrace(model="m", text=label, token_ids=[1], tokens=[label], n_layers=1, n_heads=1, d_head=1,
                          d_model=1, acts={"x": np.zeros(n_floats, np.float32)}, last_logits=np.zeros(2, np.float32))


def test_text_trace_round_trip(tiny_gpt2_dir):
    tm = load_gpt2(str(tiny_gpt2_dir))
    t = text.capture(tm, "the cat sat on the mat")
    t.derived["lens"] = "not shared"
    back = unpack(pack(t))
    assert_same(t, back)
    assert back.derived == {}
    assert text.next_tokens(tm, back, 0.7, 5) == text.next_tokens(tm, t, 0.7, 5)


def test_vision_trace_round_trip(tiny_vit_dir):
    vm = load_vit(str(tiny_vit_dir))
    pic = gallery_picture("scene-1", 24)
    t = vision.capture(vm, pic.image, "scene-1", pic.name, {"format": "PNG", "width": 24, "height": 24})
    back = unpack(pack(t))
    assert_same(t, back)  # tuples (image_size, grid, normalisation) come back as tuples
    np.testing.assert_array_equal(back.seen, t.seen)


def test_diffusion_trace_round_trip(tiny_sd_dir):
    dm = load_sd(str(tiny_sd_dir), "cpu")
    t = diffusion.run(dm, diffusion.Request("a red circle", steps=2, guidance=3.0))
    assert t.steps and t.steps[0].layers and t.steps[0].self_attn is None
    back = unpack(pack(t))
    assert_same(t, back)
    assert hash(back.request) == hash(t.request)  # the frozen request still keys the cache


def npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def header(node) -> np.ndarray:
    return np.frombuffer(json.dumps(node).encode(), np.uint8)


@pytest.mark.parametrize("payload", [
    b"",
    b"not an npz at all",
    npz(__header__=header({"$d": "Popen", "f": {"args": "true"}})),  # only trace classes are rebuilt
    npz(__header__=header({"$a": "missing"})),
    npz(__header__=header({"$x": 1})),
    npz(x=np.array([{"a": 1}], dtype=object), __header__=header({"$a": "x"})),  # a pickled object array
])
def test_anything_else_is_refused_without_unpickling(payload):
    with pytest.raises(CorruptPayload):
        unpack(payload)


def test_packing_refuses_what_it_could_not_rebuild():
    t = small_trace(4)
    for bad in ({"x": np.array([object()], dtype=object)}, {"x": object()}):
        with pytest.raises(TypeError):
            pack(dataclasses.replace(t, acts=bad))


@pytest.fixture
def url(redis_url):
    import redis

    redis.Redis.from_url(redis_url + "/2").flushdb()
    return redis_url + "/2"


def test_redis_holds_at_most_the_budget_least_recently_used_out(url):
    async def go():
        client = aioredis.from_url(url)
        one = len(pack(small_trace(10_000)))
        store = RedisTraces(client, "traces", int(2.5 * one))
        for k in "abc":
            assert await store.put(k, small_trace(10_000, k))
            if k == "b":
                assert (await store.get("a")).text == "a"  # a is now more recent than b
        assert await store.get("b") is None  # the least recently used made room for c
        assert [(await store.get(k)).text for k in "ac"] == ["a", "c"]
        assert int(await client.get(store.total)) == 2 * one <= store.max_bytes
        assert await client.zcard(store.index) == 2
        assert not await store.put("huge", small_trace(30_000))  # larger than the budget: not kept
        assert await store.get("huge") is None and await store.get("a") is not None
        await client.set(store.entry("junk"), b"garbage")
        assert await store.get("junk") is None  # a payload that does not decode is a miss, not an error
        await client.aclose()

    asyncio.run(go())


def test_redis_orders_uses_closer_than_a_millisecond(url):
    """Uses in quick succession (many fall within one millisecond) keep their order: the entry
    used least recently is the one evicted, whatever the names' order."""
    async def go():
        client = aioredis.from_url(url)
        one = len(pack(small_trace(10)))
        store = RedisTraces(client, "quick", int(2.5 * one))
        for round in range(60):
            a, b, c = (f"{round}-{n}" for n in "abc")
            await store.put(a, small_trace(10, a))
            await store.put(b, small_trace(10, b))
            assert await store.get(a) is not None  # a is now more recent than b
            await store.put(c, small_trace(10, c))
            assert await store.get(b) is None, round
            assert await store.get(a) is not None and await store.get(c) is not None, round
        await client.aclose()

    asyncio.run(go())


def two_runners(url: str):
    clients = [aioredis.from_url(url) for _ in range(2)]
    runners = []
    for c in clients:
        r = Runner(max_concurrent=1, max_queued=4, cache_bytes=10**7)
        r.shared = RedisTraces(c, "traces", 10**7)
        runners.append(r)
    return runners, clients


def test_two_processes_compute_one_run_once(url):
    gate = threading.Event()
    calls = []

    def slow(label):
        def fn():
            calls.append(label)
            gate.wait(10)
            return small_trace(100, label)

        return fn

    def never():
        raise AssertionError("computed again")

    async def go():
        (one, two), clients = two_runners(url)
        # At the same time: one computes, the other waits for its lock and takes the result.
        tasks = [asyncio.create_task(one.get("k", slow("one"), lambda t: t.nbytes))]
        await asyncio.sleep(0.2)
        tasks.append(asyncio.create_task(two.get("k", slow("two"), lambda t: t.nbytes)))
        await asyncio.sleep(0.3)
        assert calls == ["one"]
        gate.set()
        a, b = await asyncio.wait_for(asyncio.gather(*tasks), 10)
        assert a.text == b.text == "one" and one.computed + two.computed == 1
        assert two.cache.get("k") is not None  # now held locally too
        # Later: the other process finds it in Redis without computing.
        three = Runner(1, 4, 10**7)
        three.shared = RedisTraces(clients[1], "traces", 10**7)
        assert (await three.get("k", never, lambda t: t.nbytes)).text == "one"
        assert (await three.cached("k")).text == "one" and three.computed == 0
        assert await Runner(1, 4, 10**7).cached("k") is None  # unshared: its own memory only
        assert one.pending == two.pending == three.pending == 0
        for c in clients:
            await c.aclose()

    asyncio.run(go())


def test_a_lock_left_by_a_dead_process_expires(url, monkeypatch):
    monkeypatch.setattr(shared, "LOCK_TTL_MS", 400)

    async def go():
        (one, _), clients = two_runners(url)
        lock = f"{one.shared.prefix}:lock:{shared.digest('k')}"
        await clients[0].set(lock, "a process that died", px=shared.LOCK_TTL_MS)
        got = await asyncio.wait_for(one.get("k", lambda: small_trace(10, "mine"), lambda t: t.nbytes), 10)
        assert got.text == "mine" and one.computed == 1
        assert await clients[0].get(lock) is None  # released after the run
        for c in clients:
            await c.aclose()

    asyncio.run(go())


def test_runs_go_on_when_redis_is_unreachable():
    async def go():
        client = aioredis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
        r = Runner(1, 4, 10**7)
        r.shared = RedisTraces(client, "traces", 10**7)
        got = await asyncio.wait_for(r.get("k", lambda: small_trace(10, "local"), lambda t: t.nbytes), 60)
        assert got.text == "local" and r.computed == 1 and r.cache.get("k") is got
        await client.aclose()

    asyncio.run(go())
