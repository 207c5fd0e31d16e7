"""Presenter rooms in Redis, for many server processes: the same methods as app/rooms.py's `Rooms`.

With `glassbox serve --workers N`, or several servers behind a proxy, a presenter's page and its
followers' streams land on different processes; every one of them reads and changes the rooms here.

    glassbox:1:rooms:{code}            hash: secret (sha256, hex), path, query, version; TTL = idle_s,
                                       renewed by every word of the presenter (Redis does the expiry)
    glassbox:1:rooms:{code}:followers  hash: process id -> open streams there; the room's TTL
    glassbox:1:rooms:{code}:events     pub/sub channel: the new version, or "closed"
    glassbox:1:rooms:live              sorted set: code -> when it expires (the bound on rooms, Retry-After)
    glassbox:1:procs:{process id}      a process's heartbeat (TTL): followers of a process that died
                                       stop counting, instead of filling the room for good

Each process holds one pub/sub connection, subscribed to every room's channel, and wakes its own
waiting streams; a stream re-reads the room when woken, at its keep-alive, and when the room's TTL
runs out, so a message lost in a reconnect delays a follower by one keep-alive at most. Changes
are Lua scripts (atomic across processes) and times are Redis's own clock (one clock for every
machine). The secret is checked here, in Python, in constant time; a script only re-checks the
stored hash against itself so that a room replaced in between is not changed.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import secrets
import weakref

from redis.exceptions import RedisError

from app.rooms import CODE_ALPHABET, CODE_LENGTH, NoSuchRoom, RoomFull, RoomState, TooManyRooms, View, check_secret, hash_secret

log = logging.getLogger(__name__)

PREFIX = "glassbox:1:rooms"
PROCS = "glassbox:1:procs:"
HEARTBEAT_S = 5.0
PROC_TTL_MS = 20_000  # four heartbeats: a busy event loop is not taken for a dead process
VALID_CODE = re.compile(f"[{CODE_ALPHABET}]{{{CODE_LENGTH}}}")

# Lua helpers shared by the scripts: Redis's clock in ms, and the followers of live processes.
LUA_LIB = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function followers(key, procs)
  local total = 0
  local f = redis.call('HGETALL', key)
  for i = 1, #f, 2 do
    if redis.call('EXISTS', procs .. f[i]) == 1 then total = total + tonumber(f[i + 1]) end
  end
  return total
end
"""

# KEYS: room, followers. ARGV: procs prefix. -> nil, or {path, query, version, secret, followers, ttl ms}
READ = LUA_LIB + """
local r = redis.call('HMGET', KEYS[1], 'path', 'query', 'version', 'secret')
if not r[3] then return nil end
return {r[1], r[2], r[3], r[4], followers(KEYS[2], ARGV[1]), redis.call('PTTL', KEYS[1])}
"""

# KEYS: room, live. ARGV: code, secret hash, path, query, idle ms, max rooms. -> {'ok'} | {'taken'} | {'full', ms}
CREATE = LUA_LIB + """
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[6]) then
  local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  return {'full', tonumber(first[2]) - now}
end
if redis.call('EXISTS', KEYS[1]) == 1 then return {'taken'} end
redis.call('HSET', KEYS[1], 'secret', ARGV[2], 'path', ARGV[3], 'query', ARGV[4], 'version', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[5]), ARGV[1])
return {'ok'}
"""

# KEYS: room, followers, live. ARGV: code, secret hash, path, query, idle ms, channel, procs prefix,
# '1' to show the view ('0': only keep the room alive). -> nil if the room is gone, else {version, path, query, followers}
UPDATE = LUA_LIB + """
if redis.call('HGET', KEYS[1], 'secret') ~= ARGV[2] then return nil end
local version = tonumber(redis.call('HGET', KEYS[1], 'version'))
if ARGV[8] == '1' then
  local cur = redis.call('HMGET', KEYS[1], 'path', 'query')
  if cur[1] ~= ARGV[3] or cur[2] ~= ARGV[4] then
    redis.call('HSET', KEYS[1], 'path', ARGV[3], 'query', ARGV[4])
    version = redis.call('HINCRBY', KEYS[1], 'version', 1)
    redis.call('PUBLISH', ARGV[6], version)
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
redis.call('ZADD', KEYS[3], now_ms() + tonumber(ARGV[5]), ARGV[1])
local r = redis.call('HMGET', KEYS[1], 'path', 'query')
return {version, r[1], r[2], followers(KEYS[2], ARGV[7])}
"""

# KEYS: room, followers, live. ARGV: code, secret hash, channel. -> 1 closed, 0 gone
CLOSE = """
if redis.call('HGET', KEYS[1], 'secret') ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('PUBLISH', ARGV[3], 'closed')
return 1
"""

# KEYS: room, followers. ARGV: procs prefix, this process, max followers. -> {'ok'|'full'|'none', followers}
SUBSCRIBE = LUA_LIB + """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'none', 0} end
local n = followers(KEYS[2], ARGV[1])
if n >= tonumber(ARGV[3]) then return {'full', n} end
redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
redis.call('PEXPIRE', KEYS[2], redis.call('PTTL', KEYS[1]))
return {'ok', n + 1}
"""

# KEYS: followers. ARGV: this process.
UNSUBSCRIBE = """
local n = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if n > 1 then redis.call('HINCRBY', KEYS[1], ARGV[1], -1) elseif n == 1 then redis.call('HDEL', KEYS[1], ARGV[1]) end
return n
"""

# KEYS: live. -> the codes whose rooms have expired since the last look
EXPIRE = LUA_LIB + """
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms())
for _, code in ipairs(gone) do redis.call('ZREM', KEYS[1], code) end
return gone
"""


def _str(b: bytes) -> str:
    return b.decode("utf-8", "surrogatepass")


class RedisRooms:
    """`Rooms` for many processes. start() before serving (heartbeat and pub/sub), aclose() after."""

    def __init__(self, redis, max_rooms: int, max_followers: int, idle_s: float):
        self.redis = redis
        self.max_rooms, self.max_followers, self.idle_s = max_rooms, max_followers, idle_s
        self.idle_ms = max(1, math.ceil(idle_s * 1000))
        self.process = secrets.token_hex(8)  # this process's name in the followers hashes
        self.live = f"{PREFIX}:live"
        self._read, self._create, self._update, self._close, self._subscribe, self._unsubscribe, self._expire = (
            redis.register_script(s) for s in (READ, CREATE, UPDATE, CLOSE, SUBSCRIBE, UNSUBSCRIBE, EXPIRE))
        # One event per room someone here waits on, set and dropped when its channel speaks. Weak:
        # an event nobody waits on any more leaves by itself.
        self._changed: weakref.WeakValueDictionary[str, asyncio.Event] = weakref.WeakValueDictionary()
        self._tasks: list[asyncio.Task] = []

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.redis.set(PROCS + self.process, 1, px=PROC_TTL_MS)
        pubsub = self.redis.pubsub()
        await pubsub.psubscribe(self._channel("*"))  # before serving: no change is missed from here on
        self._tasks = [asyncio.create_task(self._heartbeat()), asyncio.create_task(self._listen(pubsub))]

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await self.redis.delete(PROCS + self.process)  # this process's followers stop counting now
        except RedisError as e:
            log.warning("could not sign off from Redis (the heartbeat expires by itself): %s", e)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            try:
                await self.redis.set(PROCS + self.process, 1, px=PROC_TTL_MS)
            except RedisError as e:
                log.warning("room heartbeat failed: %s", e)

    async def _listen(self, pubsub) -> None:
        # redis-py resubscribes after a brief drop by itself; this loop outlasts a longer outage.
        try:
            while True:
                try:
                    async for message in pubsub.listen():
                        if message["type"] == "pmessage":
                            self._wake(_str(message["channel"]).removeprefix(PREFIX + ":").removesuffix(":events"))
                except RedisError as e:
                    log.warning("room updates lost their Redis connection, reconnecting: %s", e)
                await asyncio.sleep(1)
                await pubsub.aclose()
                pubsub = self.redis.pubsub()
                try:
                    await pubsub.psubscribe(self._channel("*"))
                except RedisError as e:
                    log.warning("room updates cannot reach Redis: %s", e)
                    continue
                for code in list(self._changed.keys()):  # whatever changed meanwhile: re-read
                    self._wake(code)
        finally:
            await pubsub.aclose()

    def _wake(self, code: str) -> None:
        event = self._changed.pop(code, None)
        if event is not None:
            event.set()

    # -- the store's methods (as app/rooms.py's Rooms) ---------------------------------------------

    async def create(self, view: View) -> tuple[RoomState, str]:
        secret = secrets.token_urlsafe(24)
        secret_hash = hash_secret(secret).hex()
        while True:
            code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
            answer = await self._create(keys=[self._room(code), self.live],
                                        args=[code, secret_hash, view.path, view.query, self.idle_ms, self.max_rooms])
            if answer[0] == b"full":
                raise TooManyRooms(max(1, math.ceil(int(answer[1]) / 1000)))
            if answer[0] == b"ok":
                return RoomState(code, 1, view, 0), secret
            # taken: another room has this code; draw again

    async def get(self, code: str) -> RoomState:
        state, _, _ = await self._state(code)
        return state

    async def update(self, code: str, secret: str | None, view: View) -> RoomState:
        return await self._presenter(code, secret, view)

    async def touch(self, code: str, secret: str | None) -> RoomState:
        return await self._presenter(code, secret, None)

    async def close(self, code: str, secret: str | None) -> None:
        _, secret_hash, _ = await self._state(code)
        check_secret(code, bytes.fromhex(secret_hash), secret)
        if not await self._close(keys=[self._room(code), self._followers(code), self.live],
                                 args=[code, secret_hash, self._channel(code)]):
            raise NoSuchRoom(code)

    async def subscribe(self, code: str) -> RoomState:
        answer, n = await self._subscribe(keys=[self._room(code), self._followers(code)],
                                          args=[PROCS, self.process, self.max_followers])
        if answer == b"none":
            raise NoSuchRoom(code)
        if answer == b"full":
            raise RoomFull(f"Room {code} already has {n} followers, its limit.")
        return await self.get(code)

    async def unsubscribe(self, code: str) -> None:
        await self._unsubscribe(keys=[self._followers(code)], args=[self.process])

    async def wait(self, code: str, after_version: int, timeout: float) -> RoomState:
        """As Rooms.wait: the room once its version passes `after_version`, or as it is after
        `timeout`; NoSuchRoom once it has closed or expired."""
        event = self._changed.get(code)
        if event is None:  # taken before reading the room: a change published after the read wakes it
            event = self._changed[code] = asyncio.Event()
        state, _, ttl_ms = await self._state(code)
        if state.version > after_version:
            return state
        try:  # no later than the room's own expiry, so followers hear of it on time
            await asyncio.wait_for(event.wait(), max(0.0, min(timeout, ttl_ms / 1000)) + 0.01)
        except TimeoutError:
            pass
        state, _, _ = await self._state(code)
        return state

    async def expire(self) -> list[str]:
        """Redis expires the rooms themselves (key TTLs); this forgets them in the count of rooms
        and returns their codes."""
        return [_str(c) for c in await self._expire(keys=[self.live])]

    # -- internals ---------------------------------------------------------------------------

    async def _presenter(self, code: str, secret: str | None, view: View | None) -> RoomState:
        """A presenter's word: show `view` (None: only keep the room alive)."""
        _, secret_hash, _ = await self._state(code)
        check_secret(code, bytes.fromhex(secret_hash), secret)
        path, query = (view.path, view.query) if view else ("", "")
        answer = await self._update(
            keys=[self._room(code), self._followers(code), self.live],
            args=[code, secret_hash, path, query, self.idle_ms, self._channel(code), PROCS, "1" if view else "0"])
        if answer is None:
            raise NoSuchRoom(code)  # closed or expired between the check and the change
        version, path, query, followers = answer
        return RoomState(code, int(version), View(_str(path), _str(query)), int(followers))

    async def _state(self, code: str) -> tuple[RoomState, str, int]:
        """The room, its secret's hash (hex) and its time to live in ms; NoSuchRoom if it is gone."""
        answer = await self._read(keys=[self._room(code), self._followers(code)], args=[PROCS])
        if answer is None:
            raise NoSuchRoom(code)
        path, query, version, secret_hash, followers, ttl_ms = answer
        state = RoomState(code, int(version), View(_str(path), _str(query)), int(followers))
        return state, _str(secret_hash), int(ttl_ms)

    @staticmethod
    def _room(code: str) -> str:
        if not VALID_CODE.fullmatch(code):  # a code is part of key names: nothing else gets that far
            raise NoSuchRoom(code)
        return f"{PREFIX}:{code}"

    @classmethod
    def _followers(cls, code: str) -> str:
        return f"{cls._room(code)}:followers"

    @staticmethod
    def _channel(code: str) -> str:
        return f"{PREFIX}:{code}:events"
