"""The Redis room store (app/rooms_redis.py) against a real redis-server: the same behaviour as the
in-memory store (tests/test_rooms.py), with real TTLs instead of a moved clock, and two store
instances standing for two server processes."""

from __future__ import annotations

import asyncio
import inspect
import time
from contextlib import asynccontextmanager

import pytest
import redis.asyncio as aioredis

from app import rooms as store
from app.rooms import Rooms, View
from app.rooms_redis import RedisRooms

A = View("/text/attention", "text=The+cat&layer=0&head=0")
B = View("/text/attention", "text=The+cat&layer=1&head=0")


@pytest.fixture
def url(redis_url):
    import redis

    redis.Redis.from_url(redis_url + "/1").flushdb()  # each test starts from an empty database
    return redis_url + "/1"


@asynccontextmanager
async def processes(url: str, n: int = 2, max_rooms=3, max_followers=2, idle_s=60.0):
    """n stores, each with its own connection, as n server processes would hold them."""
    clients = [aioredis.from_url(url) for _ in range(n)]
    stores = [RedisRooms(c, max_rooms, max_followers, idle_s) for c in clients]
    for s in stores:
        await s.start()
    try:
        yield stores
    finally:
        for s in stores:
            await s.aclose()
        for c in clients:
            await c.aclose()


def run(coro):
    return asyncio.run(coro)


def test_same_methods_as_the_memory_store():
    def methods(cls):
        return {n: inspect.signature(f) for n, f in vars(cls).items()
                if not n.startswith("_") and inspect.iscoroutinefunction(f) and n not in ("start", "aclose")}

    assert methods(RedisRooms) == methods(Rooms)


def test_create_get_update_versions_across_processes(url):
    async def go():
        async with processes(url) as (one, two):
            state, secret = await one.create(A)
            assert state.version == 1 and state.view == A and state.followers == 0
            assert len(state.code) == store.CODE_LENGTH and set(state.code) <= set(store.CODE_ALPHABET)
            assert (await two.get(state.code)).view == A
            assert (await two.update(state.code, secret, B)).version == 2  # the secret works on any process
            assert (await one.update(state.code, secret, B)).version == 2  # the same view: a heartbeat
            got = await one.get(state.code)
            assert got.view == B and got.version == 2
            other, _ = await two.create(A)
            assert other.code != state.code

    run(go())


def test_only_the_secret_changes_the_room(url, monkeypatch):
    compared = []
    real = store.hmac.compare_digest
    monkeypatch.setattr(store.hmac, "compare_digest", lambda a, b: compared.append(1) or real(a, b))

    async def go():
        async with processes(url) as (one, two):
            state, secret = await one.create(A)
            for wrong in (None, "", secret[:-1], secret + "x", "x" * len(secret)):
                for s in (one, two):
                    with pytest.raises(store.NotPresenter):
                        await s.update(state.code, wrong, B)
                    with pytest.raises(store.NotPresenter):
                        await s.touch(state.code, wrong)
                    with pytest.raises(store.NotPresenter):
                        await s.close(state.code, wrong)
            assert (await two.get(state.code)).view == A
            _, other_secret = await two.create(A)
            with pytest.raises(store.NotPresenter):  # another room's secret is no key to this one
                await one.update(state.code, other_secret, B)

    run(go())
    assert len(compared) == 5 * 2 * 3 + 1  # every check went through the constant-time comparison


def test_codes_that_are_not_codes_reach_no_key(url):
    async def go():
        async with processes(url, n=1) as (one,):
            state, secret = await one.create(A)
            for code in (f"{state.code}:followers", "*", "", state.code.lower(), "AAAAAA"):
                with pytest.raises(store.NoSuchRoom):
                    await one.get(code)
                with pytest.raises(store.NoSuchRoom):
                    await one.subscribe(code)
                with pytest.raises(store.NoSuchRoom):
                    await one.update(code, secret, B)

    run(go())


def test_rooms_expire_by_ttl_and_the_presenter_keeps_one_alive(url):
    async def go():
        async with processes(url, idle_s=1.5) as (one, two):
            kept, secret = await one.create(A)
            dropped, _ = await one.create(A)
            for _ in range(3):  # the presenter's page speaks every few seconds, through any process
                await asyncio.sleep(0.8)
                await two.touch(kept.code, secret)
            assert (await one.get(kept.code)).version == 1
            with pytest.raises(store.NoSuchRoom):
                await two.get(dropped.code)
            assert await one.expire() == [dropped.code]  # forgotten in the count of rooms too
            await asyncio.sleep(1.7)
            with pytest.raises(store.NoSuchRoom):
                await one.update(kept.code, secret, B)

    run(go())


def test_too_many_rooms_says_when_one_frees(url):
    async def go():
        async with processes(url, max_rooms=2, idle_s=3) as (one, two):
            await one.create(A)
            await asyncio.sleep(1)
            await two.create(A)
            with pytest.raises(store.TooManyRooms) as e:  # counted over every process
                await two.create(A)
            assert e.value.retry_after_s in (2, 3)  # the first room expires 3 s after it was made, ~1 s ago
            await asyncio.sleep(e.value.retry_after_s + 0.1)
            await one.create(A)  # the stale one made way

    run(go())


def test_followers_counted_over_processes_and_bounded(url):
    async def go():
        async with processes(url, n=3, max_followers=2) as (one, two, three):
            state, _ = await one.create(A)
            await two.subscribe(state.code)
            assert (await three.subscribe(state.code)).followers == 2
            with pytest.raises(store.RoomFull):
                await one.subscribe(state.code)
            await two.unsubscribe(state.code)
            await two.unsubscribe(state.code)  # one too many: the count stays at 0, not -1
            assert (await one.get(state.code)).followers == 1
            await one.subscribe(state.code)
            # A process that goes away (or dies: its heartbeat expires) takes its followers with it,
            # instead of keeping the room full for the rest of the class.
            await three.aclose()
            assert (await one.get(state.code)).followers == 1
            await two.subscribe(state.code)
            with pytest.raises(store.NoSuchRoom):
                await one.subscribe("AAAAA")

    run(go())


def test_wait_wakes_followers_of_another_process_on_change_and_on_close(url):
    async def go():
        async with processes(url) as (presenter, follower):
            state, secret = await presenter.create(A)
            assert (await follower.wait(state.code, 0, 5)).version == 1  # behind: answered at once
            assert (await follower.wait(state.code, 1, 0.01)).version == 1  # nothing new: the timeout

            waiters = [asyncio.create_task(follower.wait(state.code, 1, 30)) for _ in range(5)]
            await asyncio.sleep(0.05)
            t0 = time.monotonic()
            await presenter.update(state.code, secret, B)
            got = await asyncio.wait_for(asyncio.gather(*waiters), 5)
            assert [g.view for g in got] == [B] * 5
            assert time.monotonic() - t0 < 2  # over pub/sub, not at the 30 s keep-alive

            waiter = asyncio.create_task(follower.wait(state.code, 2, 30))
            await asyncio.sleep(0.05)
            await presenter.close(state.code, secret)
            with pytest.raises(store.NoSuchRoom):
                await asyncio.wait_for(waiter, 5)

    run(go())


def test_wait_ends_when_the_room_expires(url):
    async def go():
        async with processes(url, n=1, idle_s=0.3) as (one,):
            state, _ = await one.create(A)
            t0 = time.monotonic()
            with pytest.raises(store.NoSuchRoom):
                await one.wait(state.code, 1, 30)
            assert time.monotonic() - t0 < 5

    run(go())
