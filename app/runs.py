"""Model runs off the event loop: a bounded number at once, a bounded queue, a byte-bounded cache.

Thirty students opening the same link cost one run: identical requests in flight share one
future, and finished traces stay in an LRU cache sized by their array bytes.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

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


class Runner:
    def __init__(self, max_concurrent: int, max_queued: int, cache_bytes: int):
        self.max_concurrent = max_concurrent
        self.max_queued = max_queued
        self.cache = TraceCache(cache_bytes)
        self._slots = asyncio.Semaphore(max_concurrent)
        self._inflight: dict[Hashable, asyncio.Future] = {}
        self.pending = 0  # runs admitted and not yet finished (running + queued)
        self.computed = 0  # runs actually computed (cache misses), for tests and /healthz

    async def get(self, key: Hashable, fn: Callable[[], Any], nbytes: Callable[[Any], int]) -> Any:
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        if key in self._inflight:
            return await asyncio.shield(self._inflight[key])
        if self.pending >= self.max_concurrent + self.max_queued:
            raise Busy(f"{self.pending} runs are already waiting")
        fut = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        self.pending += 1
        try:
            async with self._slots:
                value = await asyncio.to_thread(fn)
            self.computed += 1
            self.cache.put(key, value, nbytes(value))
            fut.set_result(value)
            return value
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()  # mark retrieved: waiters get it, nobody else must
            raise
        finally:
            self.pending -= 1
            del self._inflight[key]
