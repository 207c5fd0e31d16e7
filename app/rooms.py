"""Presenter rooms (classroom mode): a presenter's view of a page, shared with followers.

A room holds one view, the path and query string of the page the presenter is looking at (every
page keeps its whole state in its query). Only the holder of the room's secret may change it;
followers subscribe and wait for the next version. Rooms close when their presenter has been
silent for `idle_s` (an open presenter page keeps sending), and both the number of rooms and the
followers of one room are bounded.

`Rooms` keeps everything in the memory of one server process (the default: one laptop). Its methods
are async so that app/rooms_redis.py's `RedisRooms` can keep the same ones for many processes
(the room in a hash with a TTL, changes over pub/sub, followers counted per process).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

# No 0/O, 1/I/L: a code read off a projector and typed by a student should not be ambiguous.
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 5  # 31**5 ≈ 29 million codes for at most a few dozen rooms


class RoomError(Exception):
    """Base of the store's refusals; the routes turn each into an HTTP status."""


class NoSuchRoom(RoomError):
    """No room has this code (never made, ended, or expired)."""


class NotPresenter(RoomError):
    """The secret is missing or wrong: only the presenter may change the room."""


class TooManyRooms(RoomError):
    def __init__(self, retry_after_s: int):
        super().__init__(f"every room is in use; the stalest expires in {retry_after_s} s")
        self.retry_after_s = retry_after_s  # when the stalest room will have expired


class RoomFull(RoomError):
    """The room has as many followers as it may."""


@dataclass(frozen=True)
class View:
    """What a follower's page shows: the presenter's path and query string (without '?')."""

    path: str
    query: str


@dataclass(frozen=True)
class RoomState:
    """A snapshot of a room, safe to hand out (no secret)."""

    code: str
    version: int  # 1 at creation, +1 for every change of view
    view: View
    followers: int


@dataclass
class _Room:
    code: str
    secret_hash: bytes
    view: View
    last_active: float  # the presenter's last word (create or update), by the store's clock
    version: int = 1
    followers: int = 0
    closed: bool = False
    # Broadcast without a queue per follower: set on every change (and on close), then replaced,
    # so each waiter wakes once and re-reads the room. Followers only ever need the latest view.
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def snapshot(self) -> RoomState:
        return RoomState(self.code, self.version, self.view, self.followers)

    def wake(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()


def hash_secret(secret: str) -> bytes:
    # Compare digests, not the secrets: both sides have the same length whatever was sent.
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


def check_secret(code: str, secret_hash: bytes, secret: str | None) -> None:
    # Constant time: how much of a guess matched must not show in how long the answer takes.
    matches = hmac.compare_digest(secret_hash, hash_secret(secret or ""))
    if not (secret and matches):
        raise NotPresenter(code)


class Rooms:
    def __init__(self, max_rooms: int, max_followers: int, idle_s: float, clock: Callable[[], float] = time.monotonic):
        self.max_rooms = max_rooms
        self.max_followers = max_followers
        self.idle_s = idle_s
        self.clock = clock
        self._rooms: dict[str, _Room] = {}

    async def create(self, view: View) -> tuple[RoomState, str]:
        """A new room showing `view`; returns it and the presenter's secret (kept only as a hash)."""
        await self.expire()
        if len(self._rooms) >= self.max_rooms:
            soonest = min(r.last_active for r in self._rooms.values()) + self.idle_s - self.clock()
            raise TooManyRooms(max(1, math.ceil(soonest)))
        code = self._new_code()
        secret = secrets.token_urlsafe(24)
        room = _Room(code, hash_secret(secret), view, self.clock())
        self._rooms[code] = room
        return room.snapshot(), secret

    async def get(self, code: str) -> RoomState:
        return self._room(code).snapshot()

    async def update(self, code: str, secret: str | None, view: View) -> RoomState:
        """Show `view` in the room (presenter only). The same view again only keeps the room alive."""
        room = self._room(code)
        self._check_secret(room, secret)
        room.last_active = self.clock()
        if view != room.view:
            room.view = view
            room.version += 1
            room.wake()
        return room.snapshot()

    async def touch(self, code: str, secret: str | None) -> RoomState:
        """Keep the room alive without changing its view (presenter only): a second tab of the
        presenter's keeps the room open without pulling the followers to its own view."""
        room = self._room(code)
        self._check_secret(room, secret)
        room.last_active = self.clock()
        return room.snapshot()

    async def close(self, code: str, secret: str | None) -> None:
        """End the room now (presenter only); its followers are told."""
        room = self._room(code)
        self._check_secret(room, secret)
        self._drop(room)

    async def subscribe(self, code: str) -> RoomState:
        """Count one more follower (one open stream); unsubscribe() when it goes."""
        room = self._room(code)
        if room.followers >= self.max_followers:
            raise RoomFull(f"Room {code} already has {room.followers} followers, its limit.")
        room.followers += 1
        return room.snapshot()

    async def unsubscribe(self, code: str) -> None:
        room = self._rooms.get(code)
        if room is not None and room.followers > 0:
            room.followers -= 1

    async def wait(self, code: str, after_version: int, timeout: float) -> RoomState:
        """The room once its version passes `after_version`, or as it is after `timeout` seconds
        (a caller seeing the same version sends a keep-alive). NoSuchRoom once it has closed."""
        room = self._room(code)
        if room.version > after_version:
            return room.snapshot()
        # Wake no later than the room's own expiry, so followers hear of it on time.
        until_expiry = room.last_active + self.idle_s - self.clock()
        try:
            await asyncio.wait_for(room.changed.wait(), max(0.0, min(timeout, until_expiry)) + 0.01)
        except TimeoutError:
            pass
        await self.expire()
        if room.closed:
            raise NoSuchRoom(code)
        return room.snapshot()

    async def expire(self) -> list[str]:
        """Close every room whose presenter has been silent for idle_s; returns their codes."""
        now = self.clock()
        stale = [r for r in self._rooms.values() if now - r.last_active > self.idle_s]
        for room in stale:
            self._drop(room)
        return [r.code for r in stale]

    def __len__(self) -> int:
        return len(self._rooms)

    # -- internals ---------------------------------------------------------------------------

    def _room(self, code: str) -> _Room:
        room = self._rooms.get(code)
        if room is None or self.clock() - room.last_active > self.idle_s:
            if room is not None:
                self._drop(room)
            raise NoSuchRoom(code)
        return room

    @staticmethod
    def _check_secret(room: _Room, secret: str | None) -> None:
        check_secret(room.code, room.secret_hash, secret)

    def _drop(self, room: _Room) -> None:
        room.closed = True
        if self._rooms.get(room.code) is room:
            del self._rooms[room.code]
        room.wake()

    def _new_code(self) -> str:
        while True:
            code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
            if code not in self._rooms:
                return code
