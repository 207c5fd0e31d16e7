"""The room store (app/rooms.py) on its own, with a clock the tests move: versions, the secret,
bounds, waiting for a change, expiry."""

from __future__ import annotations

import asyncio

import pytest

from app import rooms as store
from app.rooms import Rooms, View

A = View("/text/attention", "text=The+cat&layer=0&head=0")
B = View("/text/attention", "text=The+cat&layer=1&head=0")


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def make(max_rooms=3, max_followers=2, idle_s=60.0):
    clock = Clock()
    return Rooms(max_rooms, max_followers, idle_s, clock), clock


def run(coro):
    return asyncio.run(coro)


def test_create_get_update_versions():
    async def go():
        rooms, _ = make()
        state, secret = await rooms.create(A)
        assert state.version == 1 and state.view == A and state.followers == 0
        assert len(state.code) == store.CODE_LENGTH and set(state.code) <= set(store.CODE_ALPHABET)
        assert len(secret) >= 32
        assert (await rooms.update(state.code, secret, B)).version == 2
        assert (await rooms.update(state.code, secret, B)).version == 2  # the same view: a heartbeat, no change
        got = await rooms.get(state.code)
        assert got.view == B and got.version == 2
        other, _ = await rooms.create(A)
        assert other.code != state.code

    run(go())


def test_touch_keeps_a_room_without_changing_it():
    async def go():
        rooms, clock = make(idle_s=60)
        state, secret = await rooms.create(A)
        clock.t += 50
        assert (await rooms.touch(state.code, secret)).version == 1
        clock.t += 50  # 100 s after creation, 50 after the touch
        assert (await rooms.get(state.code)).view == A
        with pytest.raises(store.NotPresenter):
            await rooms.touch(state.code, "wrong")
        clock.t += 11  # the refused touch did not count
        with pytest.raises(store.NoSuchRoom):
            await rooms.get(state.code)

    run(go())


def test_only_the_secret_changes_the_room():
    async def go():
        rooms, _ = make()
        state, secret = await rooms.create(A)
        for wrong in (None, "", secret[:-1], secret + "x", "x" * len(secret)):
            with pytest.raises(store.NotPresenter):
                await rooms.update(state.code, wrong, B)
            with pytest.raises(store.NotPresenter):
                await rooms.close(state.code, wrong)
        assert (await rooms.get(state.code)).view == A
        other, other_secret = await rooms.create(A)
        with pytest.raises(store.NotPresenter):  # another room's secret is no key to this one
            await rooms.update(state.code, other_secret, B)

    run(go())


def test_too_many_rooms_says_when_one_frees():
    async def go():
        rooms, clock = make(max_rooms=2, idle_s=100)
        await rooms.create(A)
        clock.t += 30
        await rooms.create(A)
        with pytest.raises(store.TooManyRooms) as e:
            await rooms.create(A)
        assert e.value.retry_after_s == 70  # the first room expires 100 s after it was made, 30 s ago
        clock.t += 71
        await rooms.create(A)  # the stale one made way

    run(go())


def test_followers_bounded_and_counted():
    async def go():
        rooms, _ = make(max_followers=2)
        state, _ = await rooms.create(A)
        await rooms.subscribe(state.code)
        assert (await rooms.subscribe(state.code)).followers == 2
        with pytest.raises(store.RoomFull):
            await rooms.subscribe(state.code)
        await rooms.unsubscribe(state.code)
        assert (await rooms.get(state.code)).followers == 1
        await rooms.subscribe(state.code)
        with pytest.raises(store.NoSuchRoom):
            await rooms.subscribe("AAAAA")

    run(go())


def test_idle_rooms_expire_and_the_presenter_keeps_one_alive():
    async def go():
        rooms, clock = make(idle_s=60)
        kept, secret = await rooms.create(A)
        dropped, _ = await rooms.create(A)
        for _ in range(5):  # the presenter's page sends its view every few seconds
            clock.t += 50
            await rooms.update(kept.code, secret, A)
        assert await rooms.expire() == [dropped.code]
        assert (await rooms.get(kept.code)).version == 1
        with pytest.raises(store.NoSuchRoom):
            await rooms.get(dropped.code)
        clock.t += 61
        with pytest.raises(store.NoSuchRoom):  # found stale on lookup, without waiting for expire()
            await rooms.update(kept.code, secret, B)
        assert len(rooms) == 0

    run(go())


def test_wait_wakes_on_change_and_on_close():
    async def go():
        rooms, _ = make()
        state, secret = await rooms.create(A)
        assert (await rooms.wait(state.code, 0, 5)).version == 1  # behind: answered at once
        assert (await rooms.wait(state.code, 1, 0.01)).version == 1  # nothing new: the timeout (a keep-alive)

        waiters = [asyncio.create_task(rooms.wait(state.code, 1, 30)) for _ in range(5)]
        await asyncio.sleep(0.01)
        await rooms.update(state.code, secret, B)
        got = await asyncio.wait_for(asyncio.gather(*waiters), 2)
        assert [g.view for g in got] == [B] * 5

        waiter = asyncio.create_task(rooms.wait(state.code, 2, 30))
        await asyncio.sleep(0.01)
        await rooms.close(state.code, secret)
        with pytest.raises(store.NoSuchRoom):
            await asyncio.wait_for(waiter, 2)

    run(go())


def test_wait_ends_when_the_room_expires():
    """A follower waiting with a long keep-alive still hears of the expiry on time."""

    async def go():
        rooms = Rooms(3, 3, idle_s=0.2)
        state, _ = await rooms.create(A)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(store.NoSuchRoom):
            await rooms.wait(state.code, 1, 30)
        assert loop.time() - t0 < 5

    run(go())
