"""Model runs off the event loop: a bounded number at once, a bounded queue, a byte-bounded cache.

Thirty students opening the same link cost one run: identical requests in flight share one
future, and finished traces stay in an LRU cache sized by their array bytes. With `shared` set
(app/shared.py, when GLASSBOX_REDIS_URL is), a miss asks Redis before computing and only one
process computes a given run: the same run is cached once for every process.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.shared import RedisTraces

log = logging.getLogger(__name__)


class Busy(RuntimeError):
    """More runs are waiting than the queue holds: answer 503 with Retry-After."""


class TraceCache:
    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()

    def get(self, key: Hashable):
        item = self._items.get(key)
        if item is None:
            return None
        self._items.move_to_end(key)
        return item[0]

    def put(self, key: Hashable, value: Any, nbytes: int) -> None:
        if nbytes > self.max_bytes:
            return  # larger than the whole cache: serve it, keep nothing
        if key in self._items:
            self.bytes -= self._items.pop(key)[1]
        self._items[key] = (value, nbytes)
        self.bytes += nbytes
        while self.bytes > self.max_bytes:
            _, (_, n) = self._items.popitem(last=False)
            self.bytes -= n

    def __len__(self) -> int:
        return len(self._items)


class CachedRuns:
    """What both runners share: a byte-bounded cache in this process, backed by Redis when the
    processes share one (self.shared, set by the app)."""

    cache: TraceCache
    shared: RedisTraces | None = None

    async def cached(self, key: Hashable) -> Any | None:
        """The value if this process or (when shared) another one holds it; never computes."""
        hit = self.cache.get(key)
        if hit is None and self.shared is not None:
            hit = await self.shared.get(key)
            if hit is not None:
                self.cache.put(key, hit, hit.nbytes)
        return hit


class Runner(CachedRuns):
    def __init__(self, max_concurrent: int, max_queued: int, cache_bytes: int):
        self.max_concurrent = max_concurrent
        self.max_queued = max_queued
        self.cache = TraceCache(cache_bytes)
        self._slots = asyncio.Semaphore(max_concurrent)
        self._inflight: dict[Hashable, asyncio.Future] = {}
        self.pending = 0  # runs admitted and not yet finished (running + queued)
        self.computed = 0  # runs actually computed (cache misses), for tests and /healthz
        self.shared: RedisTraces | None = None  # set by the app when processes share Redis

    async def get(self, key: Hashable, fn: Callable[[], Any], nbytes: Callable[[Any], int]) -> Any:
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        if key in self._inflight:
            return await asyncio.shield(self._inflight[key])
        fut = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut  # before the first await, so identical requests join this one
        try:
            value = await self._fetch_or_run(key, fn, nbytes)
            fut.set_result(value)
            return value
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()  # mark retrieved: waiters get it, nobody else must
            raise
        finally:
            del self._inflight[key]

    async def _fetch_or_run(self, key: Hashable, fn: Callable[[], Any], nbytes: Callable[[Any], int]) -> Any:
        if self.shared is not None:
            found = await self.shared.get(key)  # another process's run is served even when we are busy
            if found is not None:
                self.cache.put(key, found, nbytes(found))
                return found
        if self.pending >= self.max_concurrent + self.max_queued:
            raise Busy(f"{self.pending} runs are already waiting")
        self.pending += 1
        try:
            async with AsyncExitStack() as stack:
                if self.shared is not None:
                    found = await stack.enter_async_context(self.shared.turn(key))
                    if found is not None:  # another process computed it while we waited for the lock
                        self.cache.put(key, found, nbytes(found))
                        return found
                async with self._slots:
                    value = await asyncio.to_thread(fn)
                self.computed += 1
                self.cache.put(key, value, nbytes(value))
                if self.shared is not None:
                    await self.shared.put(key, value)  # inside the lock: waiters find it as it is released
                return value
        finally:
            self.pending -= 1


class LiveRun:
    """One streamed run: the worker thread appends step events; every page watching it reads them
    from the start (a late follower replays what it missed). Cancelled when its last watcher leaves."""

    def __init__(self, key: Hashable, head: dict):
        self.key = key
        self.head = head  # what the page needs before the first step (tokens, notices)
        self.events: list[dict] = []
        self.done = False
        self.error: str | None = None
        self.watchers = 0
        self.cancel = threading.Event()
        self.result: Any = None


class StreamRunner(CachedRuns):
    """Streamed runs (diffusion): at most max_concurrent computing, max_queued waiting, then Busy.
    A finished run stays in a byte-bounded cache; asking again replays it without computing. With
    `shared` set, finished runs are shared with the other processes too (a run still streaming is
    not: each process streams its own, rather than holding a page with no steps until another ends)."""

    def __init__(self, max_concurrent: int, max_queued: int, cache_bytes: int):
        self.max_concurrent, self.max_queued = max_concurrent, max_queued
        self.cache = TraceCache(cache_bytes)
        self._slots = asyncio.Semaphore(max_concurrent)
        self._live: dict[Hashable, LiveRun] = {}
        self._tasks: set[asyncio.Task] = set()
        self.pending = 0
        self.computed = 0
        self.shared: RedisTraces | None = None

    async def start(self, key: Hashable, head: dict, work: Callable[[LiveRun], Any], nbytes: Callable[[Any], int],
                    replay: Callable[[Any], list[dict]]) -> LiveRun:
        """work(run) computes in a thread, appending to run.events and polling run.cancel; its return
        value is cached. replay(result) rebuilds the events of a cached result."""
        hit = self.cache.get(key)
        if hit is None and key not in self._live:  # one streaming here is joined, not looked up elsewhere
            hit = await self.cached(key)
        if hit is not None:
            run = LiveRun(key, head)
            run.events, run.result, run.done = replay(hit), hit, True
            return run
        if key in self._live and not self._live[key].cancel.is_set():
            return self._live[key]
        if self.pending >= self.max_concurrent + self.max_queued:
            raise Busy(f"{self.pending} runs are already waiting")
        run = LiveRun(key, head)
        self._live[key] = run
        self.pending += 1
        task = asyncio.get_running_loop().create_task(self._drive(run, work, nbytes))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return run

    async def _drive(self, run: LiveRun, work, nbytes) -> None:
        try:
            async with self._slots:
                if run.cancel.is_set():
                    run.error = "cancelled"
                    return
                result = await asyncio.to_thread(work, run)
            self.computed += 1
            self.cache.put(run.key, result, nbytes(result))
            run.result = result
            if self.shared is not None:
                await self.shared.put(run.key, result)
        except Exception as e:  # noqa: BLE001 - reported to the page, the server goes on
            run.error = "cancelled" if run.cancel.is_set() else f"{type(e).__name__}: {e}"
            if not run.cancel.is_set():
                log.exception("streamed run %s failed", run.key)
        finally:
            run.done = True
            self.pending -= 1
            if self._live.get(run.key) is run:
                del self._live[run.key]
