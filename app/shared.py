"""What several server processes share through Redis (GLASSBOX_REDIS_URL): finished traces.

A class that outgrows one process runs `glassbox serve --workers N`, or several servers behind a
proxy; thirty students' requests then land on different processes, and the run one of them
computed should serve the others. Each process keeps its own LRU (app/runs.py); on a miss it asks
Redis before computing, and a Redis lock lets only one process compute a given run while the
others wait for its result.

Traces travel as one .npz: their arrays as they are, plus a JSON header for everything else, read
back with allow_pickle=False. Nothing from Redis is ever unpickled: a payload can only rebuild the
trace classes listed in TRACE_CLASSES, from arrays and JSON values.

Redis holds at most `max_bytes` of payloads per namespace, least recently used evicted first (an
index sorted by last use, kept in step by Lua scripts so every process sees one budget); each entry
also carries a TTL, so nothing outlives a day unused. A single Redis server (scripts touch keys
by name, which Redis Cluster would not allow).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import io
import json
import logging
import secrets
import zipfile
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
from redis.exceptions import RedisError

from app.capture import diffusion, text, vision

log = logging.getLogger(__name__)

# Bumped whenever a trace class changes shape: a process of another version then misses instead of
# reading a payload it would rebuild wrongly.
FORMAT = 1
PREFIX = f"glassbox:{FORMAT}"
TRACE_CLASSES = {c.__name__: c for c in (text.TextTrace, vision.VisionTrace, diffusion.Trace, diffusion.Step, diffusion.Request)}
SKIPPED_FIELDS = {"derived"}  # lazily computed views: each process recomputes its own
ENTRY_TTL_S = 24 * 3600
LOCK_TTL_MS = 10_000  # a computing process renews its lock; one that died frees it within this
LOCK_RENEW_S = 3.0


class CorruptPayload(ValueError):
    """A payload that is not a trace this version wrote."""


# -- the codec ---------------------------------------------------------------------------------


def pack(trace: Any) -> bytes:
    """A trace as .npz bytes: arrays under their field path, the rest as JSON in `__header__`."""
    arrays: dict[str, np.ndarray] = {}
    header = _encode(trace, arrays, "t")
    arrays["__header__"] = np.frombuffer(json.dumps(header, separators=(",", ":")).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def unpack(payload: bytes) -> Any:
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files}
        header = json.loads(arrays.pop("__header__").tobytes())
        return _decode(header, arrays)
    except (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as e:
        raise CorruptPayload(f"not a glassbox trace: {e}") from e


def _encode(x: Any, arrays: dict, path: str) -> Any:
    if isinstance(x, np.ndarray):
        if x.dtype.hasobject:
            raise TypeError(f"{path}: object arrays cannot be shared")
        arrays[path] = x
        return {"$a": path}
    if isinstance(x, np.generic):
        return x.item()
    if dataclasses.is_dataclass(x):
        name = type(x).__name__
        if TRACE_CLASSES.get(name) is not type(x):
            raise TypeError(f"{path}: {name} is not a shareable trace class")
        fields = {f.name: _encode(getattr(x, f.name), arrays, f"{path}.{f.name}")
                  for f in dataclasses.fields(x) if f.name not in SKIPPED_FIELDS}
        return {"$d": name, "f": fields}
    if isinstance(x, dict):
        return {"$m": {str(k): _encode(v, arrays, f"{path}.{k}") for k, v in x.items()}}
    if isinstance(x, tuple):
        return {"$t": [_encode(v, arrays, f"{path}.{i}") for i, v in enumerate(x)]}
    if isinstance(x, list):
        return [_encode(v, arrays, f"{path}.{i}") for i, v in enumerate(x)]
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    raise TypeError(f"{path}: cannot share a {type(x).__name__}")


def _decode(x: Any, arrays: dict) -> Any:
    if isinstance(x, list):
        return [_decode(v, arrays) for v in x]
    if not isinstance(x, dict):
        return x
    if "$a" in x:
        return arrays[x["$a"]]
    if "$t" in x:
        return tuple(_decode(v, arrays) for v in x["$t"])
    if "$m" in x:
        return {k: _decode(v, arrays) for k, v in x["$m"].items()}
    if "$d" in x:
        cls = TRACE_CLASSES[x["$d"]]  # KeyError for any other name: only trace classes are rebuilt
        return cls(**{k: _decode(v, arrays) for k, v in x["f"].items()})
    raise ValueError(f"unknown header node {sorted(x)}")


def digest(key: Hashable) -> str:
    """A cache key (a tuple of strings, numbers and frozen dataclasses) as a Redis key part; repr()
    of these is the same in every process."""
    return hashlib.sha256(repr(key).encode("utf-8", "surrogatepass")).hexdigest()


# -- the store ---------------------------------------------------------------------------------

# Recency is a counter, not the clock: two uses within one millisecond of each other must still
# be ordered (a tie in the zset falls back to the entry names, evicting a fresh entry).
# KEYS: entry, index (zset: entry -> last use), sizes (hash: entry -> bytes), total (bytes held), clock
# ARGV: payload, its bytes, the budget, TTL s. Evicts the least recently used until under budget.
PUT = """
local now = redis.call('INCR', KEYS[5])
local old = redis.call('HGET', KEYS[3], KEYS[1])
if old then redis.call('DECRBY', KEYS[4], old) end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[4])
redis.call('HSET', KEYS[3], KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], now, KEYS[1])
local total = redis.call('INCRBY', KEYS[4], ARGV[2])
local budget = tonumber(ARGV[3])
while total > budget do
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
  if not oldest then break end
  local n = tonumber(redis.call('HGET', KEYS[3], oldest) or '0')
  redis.call('ZREM', KEYS[2], oldest)
  redis.call('HDEL', KEYS[3], oldest)
  redis.call('DEL', oldest)
  total = redis.call('DECRBY', KEYS[4], n)
end
return total
"""

# KEYS: entry, index, clock. ARGV: TTL s. The payload, marked as just used; nil when there is none.
GET = """
local v = redis.call('GET', KEYS[1])
if v then
  redis.call('ZADD', KEYS[2], 'XX', redis.call('INCR', KEYS[3]), KEYS[1])
  redis.call('EXPIRE', KEYS[1], ARGV[1])
end
return v
"""

# KEYS: lock. ARGV: token. Deletes the lock only if this process still holds it.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: lock. ARGV: token, TTL ms.
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


class RedisTraces:
    """One namespace of shared traces ("traces" for GPT-2 and ViT, "diffusion" for finished runs).

    Redis failing is never a reason to refuse a run: every call here logs and degrades to a miss (or
    to computing without the lock), and the process goes on with its own cache."""

    def __init__(self, redis, namespace: str, max_bytes: int):
        self.redis = redis
        self.max_bytes = max_bytes
        self.prefix = f"{PREFIX}:{namespace}"
        self.index, self.sizes, self.total = f"{self.prefix}:index", f"{self.prefix}:sizes", f"{self.prefix}:total"
        self.clock = f"{self.prefix}:clock"
        self._put, self._get = redis.register_script(PUT), redis.register_script(GET)
        self._release, self._renew = redis.register_script(RELEASE), redis.register_script(RENEW)

    def entry(self, key: Hashable) -> str:
        return f"{self.prefix}:entry:{digest(key)}"

    async def get(self, key: Hashable) -> Any | None:
        try:
            payload = await self._get(keys=[self.entry(key), self.index, self.clock], args=[ENTRY_TTL_S])
        except RedisError as e:
            log.warning("shared cache unreachable, computing locally: %s", e)
            return None
        if payload is None:
            return None
        try:
            return await asyncio.to_thread(unpack, payload)
        except CorruptPayload as e:
            log.warning("dropping a shared trace that does not decode: %s", e)
            return None

    async def put(self, key: Hashable, trace: Any) -> bool:
        """Share `trace`; False when it is larger than the whole budget (served, not kept) or Redis failed."""
        payload = await asyncio.to_thread(pack, trace)
        if len(payload) > self.max_bytes:
            return False
        try:
            await self._put(keys=[self.entry(key), self.index, self.sizes, self.total, self.clock],
                            args=[payload, len(payload), self.max_bytes, ENTRY_TTL_S])
        except RedisError as e:
            log.warning("could not share a trace: %s", e)
            return False
        return True

    @asynccontextmanager
    async def turn(self, key: Hashable) -> AsyncIterator[Any | None]:
        """Wait for this process's turn to compute `key`: yields the trace if another process
        finished it meanwhile, else None while holding the lock (released on exit)."""
        lock, token = f"{self.prefix}:lock:{digest(key)}", secrets.token_hex(16)
        pause = 0.02
        while True:
            try:
                if await self.redis.set(lock, token, nx=True, px=LOCK_TTL_MS):
                    break
            except RedisError as e:
                log.warning("shared lock unreachable, computing without it: %s", e)
                yield None
                return
            found = await self.get(key)  # someone else computes it: wait for their result
            if found is not None:
                yield found
                return
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.25)
        renewer = asyncio.create_task(self._keep(lock, token))
        try:
            # It may have landed between our miss and the lock (the holder put it, then released).
            yield await self.get(key)
        finally:
            renewer.cancel()
            try:
                await self._release(keys=[lock], args=[token])
            except RedisError as e:
                log.warning("could not release a shared lock (it expires by itself): %s", e)

    async def _keep(self, lock: str, token: str) -> None:
        """Renew the lock while this process computes: a long run keeps it, a dead process loses it."""
        while True:
            await asyncio.sleep(LOCK_RENEW_S)
            try:
                await self._renew(keys=[lock], args=[token, LOCK_TTL_MS])
            except RedisError as e:
                log.warning("could not renew a shared lock: %s", e)
