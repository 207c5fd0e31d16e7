"""Presenter rooms through HTTP: create, read, change (presenter only), end; the followers' event
stream through a real server (uvicorn: a stream can be held open and dropped); the bounds; idle
expiry; and a room of 60 followers costing one model run per change."""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from contextlib import asynccontextmanager
from urllib.parse import parse_qs, urlencode

import httpx
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.conftest import thread_server

ATTENTION = {"path": "/text/attention", "query": urlencode({"text": "The cat sat on the mat", "layer": 0, "head": 0})}
HEADS = {"path": "/text/attention", "query": urlencode({"text": "The cat sat on the mat", "layer": 1, "head": 2})}


def secret_header(secret: str) -> dict:
    return {"X-Room-Secret": secret}


def assert_error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) >= {"error", "detail"} and body["detail"]
    return body


@pytest.fixture(scope="module")
def rooms_client(tiny_gpt2_dir):
    with TestClient(create_app(Settings(gpt2=str(tiny_gpt2_dir), vit="", sd="", max_rooms=4))) as c:
        yield c


def new_room(c, view=ATTENTION) -> tuple[str, str]:
    r = c.post("/api/rooms", json=view)
    assert r.status_code == 201, r.text
    return r.json()["code"], r.json()["secret"]


def end_room(c, code: str, secret: str) -> None:
    assert c.delete(f"/api/rooms/{code}", headers=secret_header(secret)).status_code == 204


# ---------------------------------------------------------------------------------------------
# Plain requests (TestClient)


def test_create_read_change_end(rooms_client):
    c = rooms_client
    r = c.post("/api/rooms", json={**ATTENTION, "query": "?" + ATTENTION["query"]})
    assert r.status_code == 201
    room = r.json()
    code, secret = room["code"], room["secret"]
    assert room["version"] == 1 and room["path"] == ATTENTION["path"] and room["query"] == ATTENTION["query"]
    assert room["followers"] == 0 and room["join_url"] == f"/join/{code}"

    got = c.get(f"/api/rooms/{code.lower()}").json()  # codes are typed by students: any case
    assert "secret" not in got and got["version"] == 1

    r = c.put(f"/api/rooms/{code}/state", json=HEADS, headers=secret_header(secret))
    assert r.status_code == 200 and r.json()["version"] == 2 and r.json()["query"] == HEADS["query"]
    r = c.put(f"/api/rooms/{code}/state", json=HEADS, headers=secret_header(secret))
    assert r.json()["version"] == 2  # the same view again keeps the room alive, changes nothing

    r = c.post(f"/api/rooms/{code}/alive", headers=secret_header(secret))  # the presenter page's heartbeat
    assert r.status_code == 200 and r.json()["version"] == 2 and r.json()["followers"] == 0
    assert_error(c.post(f"/api/rooms/{code}/alive"), 403)

    end_room(c, code, secret)
    assert_error(c.get(f"/api/rooms/{code}"), 404)
    assert_error(c.put(f"/api/rooms/{code}/state", json=HEADS, headers=secret_header(secret)), 404)
    assert_error(c.post(f"/api/rooms/{code}/alive", headers=secret_header(secret)), 404)


def test_only_the_presenter_changes_the_room(rooms_client):
    c = rooms_client
    code, secret = new_room(c)
    _, other_secret = new_room(c)
    for headers in ({}, secret_header("wrong"), secret_header(secret[:-1]), secret_header(other_secret)):
        body = assert_error(c.put(f"/api/rooms/{code}/state", json=HEADS, headers=headers), 403)
        assert "presenter" in body["detail"]
        assert_error(c.delete(f"/api/rooms/{code}", headers=headers), 403)
    assert c.get(f"/api/rooms/{code}").json()["version"] == 1  # untouched
    end_room(c, code, secret)
    end_room(c, _, other_secret)


def test_secret_is_compared_in_constant_time(rooms_client, monkeypatch):
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    c = rooms_client
    code, secret = new_room(c)
    assert_error(c.put(f"/api/rooms/{code}/state", json=HEADS, headers=secret_header("x" * len(secret))), 403)
    assert_error(c.put(f"/api/rooms/{code}/state", json=HEADS), 403)  # no secret: the same comparison is made
    assert c.put(f"/api/rooms/{code}/state", json=HEADS, headers=secret_header(secret)).status_code == 200
    assert len(calls) == 3
    assert all(isinstance(a, bytes) and len(a) == len(b) == 32 for a, b in calls)  # digests: equal lengths always
    end_room(c, code, secret)


def test_a_room_shows_glassbox_pages_only(rooms_client):
    c = rooms_client
    for path in ("https://example.com/", "//example.com/text/attention", "javascript:alert(1)", "/api/rooms", "/text/nope"):
        body = assert_error(c.post("/api/rooms", json={"path": path, "query": ""}), 422)
        assert "not a glassbox page" in body["detail"]
    code, secret = new_room(c)
    assert_error(c.put(f"/api/rooms/{code}/state", json={"path": "//example.com", "query": ""}, headers=secret_header(secret)), 422)
    big = {"path": "/text/attention", "query": "text=" + "a" * (64 * 1024)}
    assert "longer than" in assert_error(c.put(f"/api/rooms/{code}/state", json=big, headers=secret_header(secret)), 422)["detail"]
    for path in ("/", "/vision/rollout", "/diffusion/generate"):
        assert c.put(f"/api/rooms/{code}/state", json={"path": path, "query": ""}, headers=secret_header(secret)).status_code == 200
    end_room(c, code, secret)


def test_too_many_rooms_is_503_with_retry_after(rooms_client):
    c = rooms_client
    made = [new_room(c) for _ in range(4)]  # max_rooms=4
    r = c.post("/api/rooms", json=ATTENTION)
    body = assert_error(r, 503)
    assert "rooms are in use" in body["detail"]
    retry = int(r.headers["Retry-After"])
    assert 1 <= retry <= 900  # when the stalest room would expire (room_idle_s defaults to 900)
    end_room(c, *made[0])
    code, secret = new_room(c)  # an ended room frees its place at once
    for room in made[1:] + [(code, secret)]:
        end_room(c, *room)


def test_idle_rooms_expire(tiny_gpt2_dir):
    with TestClient(create_app(Settings(gpt2=str(tiny_gpt2_dir), vit="", sd="", room_idle_s=0.3, max_rooms=1))) as c:
        code, secret = new_room(c)
        assert_error(c.post("/api/rooms", json=ATTENTION), 503)
        time.sleep(1.0)
        assert_error(c.get(f"/api/rooms/{code}"), 404)
        assert_error(c.put(f"/api/rooms/{code}/state", json=HEADS, headers=secret_header(secret)), 404)
        assert_error(c.get(f"/api/rooms/{code}/events"), 404)
        new_room(c)  # its place is free again


def test_join_link_goes_to_the_rooms_view(rooms_client):
    c = rooms_client
    code, secret = new_room(c)
    for url in (f"/join/{code}", f"/join/{code.lower()}", f"/join?code={code.lower()}"):
        r = c.get(url, follow_redirects=False)
        assert r.status_code == 303
        assert r.headers["location"] == f"{ATTENTION['path']}?{ATTENTION['query']}&room={code}"
    c.put(f"/api/rooms/{code}/state", json={"path": "/", "query": ""}, headers=secret_header(secret))
    assert c.get(f"/join/{code}", follow_redirects=False).headers["location"] == f"/?room={code}"

    r = c.get("/join")
    assert r.status_code == 200 and 'name="code"' in r.text
    r = c.get("/join/<b>x")
    assert r.status_code == 404 and "<B>X" not in r.text and "&lt;B&gt;X" in r.text  # escaped
    end_room(c, code, secret)


# ---------------------------------------------------------------------------------------------
# The event stream, through a real server


async def read_events(response: httpx.Response, into: asyncio.Queue) -> None:
    """Parse a text/event-stream into (event, data) pairs; comments arrive as ("comment", text).
    A data dict gets `_at`: when it arrived (time.monotonic)."""
    event, data = None, []
    async for line in response.aiter_lines():
        if line == "":
            if data:
                await into.put((event or "message", {**json.loads("\n".join(data)), "_at": time.monotonic()}))
            event, data = None, []
        elif line.startswith(":"):
            await into.put(("comment", line[1:].strip()))
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())


@asynccontextmanager
async def follower(client: httpx.AsyncClient, base: str, code: str):
    """One follower's stream: yields a queue of its events; the stream is dropped on exit."""
    queue: asyncio.Queue = asyncio.Queue()
    async with client.stream("GET", f"{base}/api/rooms/{code}/events") as r:
        assert r.status_code == 200, await r.aread()
        assert r.headers["content-type"].startswith("text/event-stream")
        task = asyncio.create_task(read_events(r, queue))
        try:
            yield queue
        finally:
            task.cancel()


async def next_event(queue: asyncio.Queue, kind: str, timeout: float = 10) -> dict:
    async def wait():
        while True:
            event, data = await queue.get()
            if event == kind:
                return data

    return await asyncio.wait_for(wait(), timeout)


async def followers_of(client: httpx.AsyncClient, base: str, code: str, n: int, timeout: float = 10) -> None:
    """Wait until the server counts n followers (a dropped stream is noticed, not just forgotten)."""
    deadline = time.monotonic() + timeout
    while (got := (await client.get(f"{base}/api/rooms/{code}")).json()["followers"]) != n:
        assert time.monotonic() < deadline, f"{got} followers, expected {n}"
        await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
def rooms_server(tiny_gpt2_dir):
    settings = Settings(gpt2=str(tiny_gpt2_dir), vit="", sd="", max_followers_per_room=3, room_ping_s=0.3)
    with thread_server(settings) as base:
        yield base


def test_presenter_change_reaches_followers(rooms_server):
    base = rooms_server

    async def go():
        async with httpx.AsyncClient(timeout=10) as client:
            room = (await client.post(f"{base}/api/rooms", json=ATTENTION)).json()
            code, secret = room["code"], room["secret"]
            async with follower(client, base, code) as a, follower(client, base, code) as b:
                for q in (a, b):  # the view as it is now, first thing
                    first = await next_event(q, "state")
                    assert (first["version"], first["query"]) == (1, ATTENTION["query"])
                assert await next_event(a, "comment", 3) == "ping"  # quiet rooms keep their streams open

                t0 = time.monotonic()
                r = await client.put(f"{base}/api/rooms/{code}/state", json=HEADS, headers=secret_header(secret))
                assert r.status_code == 200
                for q in (a, b):
                    s = await next_event(q, "state", 5)
                    assert (s["version"], s["path"], s["query"]) == (2, HEADS["path"], HEADS["query"])
                assert time.monotonic() - t0 < 2

                refused = await client.put(f"{base}/api/rooms/{code}/state", json=ATTENTION, headers=secret_header("nope"))
                assert refused.status_code == 403 and refused.json()["error"] == "forbidden"
                await client.put(f"{base}/api/rooms/{code}/state", json=HEADS, headers=secret_header(secret))  # a heartbeat
                with pytest.raises(TimeoutError):  # neither the refusal nor the heartbeat reached anyone
                    await next_event(a, "state", 1)

                await client.delete(f"{base}/api/rooms/{code}", headers=secret_header(secret))
                for q in (a, b):
                    assert (await next_event(q, "closed", 5))["code"] == code

    asyncio.run(go())


def test_followers_are_bounded_and_leaving_frees_a_place(rooms_server):
    base = rooms_server

    async def go():
        async with httpx.AsyncClient(timeout=10) as client:
            room = (await client.post(f"{base}/api/rooms", json=ATTENTION)).json()
            code, secret = room["code"], room["secret"]
            async with follower(client, base, code) as a, follower(client, base, code) as b:
                async with follower(client, base, code) as c:
                    for q in (a, b, c):
                        await next_event(q, "state")
                    await followers_of(client, base, code, 3)
                    r = await client.get(f"{base}/api/rooms/{code}/events")  # a fourth: max_followers_per_room=3
                    body = assert_error(r, 503)
                    assert "full" in body["detail"] and int(r.headers["Retry-After"]) >= 1
                await followers_of(client, base, code, 2)  # the dropped stream was counted out
                async with follower(client, base, code) as d:
                    await next_event(d, "state")
            await followers_of(client, base, code, 0)
            assert_error(await client.get(f"{base}/api/rooms/ZZZZZ/events"), 404)
            await client.delete(f"{base}/api/rooms/{code}", headers=secret_header(secret))

    asyncio.run(go())


def test_followers_hear_when_an_idle_room_expires(tiny_gpt2_dir):
    """The keep-alive is long (30 s) but the room's idle limit short: the stream still closes on time."""
    settings = Settings(gpt2=str(tiny_gpt2_dir), vit="", sd="", room_idle_s=1.0, room_ping_s=30)
    with thread_server(settings) as base:

        async def go():
            async with httpx.AsyncClient(timeout=10) as client:
                code = (await client.post(f"{base}/api/rooms", json=ATTENTION)).json()["code"]
                t0 = time.monotonic()
                async with follower(client, base, code) as q:
                    await next_event(q, "state")
                    closed = await next_event(q, "closed", 10)
                assert closed["code"] == code
                assert 0.9 <= time.monotonic() - t0 < 8
                assert_error(await client.get(f"{base}/api/rooms/{code}"), 404)

        asyncio.run(go())


# ---------------------------------------------------------------------------------------------
# A class of 60, against the server as `glassbox serve` runs it

N_FOLLOWERS = 60
DELIVERY_S = 1.0  # from the presenter's PUT to the last of 60 followers (loopback; typically under 0.2 s on a loaded 2-core machine)


def test_room_of_60_followers_costs_one_run(live_server):
    """60 followers on open streams all receive the presenter's change; each then asks for the view
    as its page would, and the server computes the trace once."""
    base = live_server
    text = f"The teacher wrote a new sentence number {uuid.uuid4().hex[:8]} on the board"
    new_view = {"path": "/text/attention", "query": urlencode({"text": text, "layer": 1, "head": 2})}

    async def go():
        limits = httpx.Limits(max_connections=N_FOLLOWERS + 10, max_keepalive_connections=N_FOLLOWERS + 10)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            room = (await client.post(f"{base}/api/rooms", json=ATTENTION)).json()
            code, secret = room["code"], room["secret"]
            connected = asyncio.Event()
            go_ahead = asyncio.Event()
            ready = 0

            async def one() -> tuple[float, int]:
                nonlocal ready
                async with follower(client, base, code) as q:
                    await next_event(q, "state", 30)
                    ready += 1
                    if ready == N_FOLLOWERS:
                        connected.set()
                    await go_ahead.wait()
                    s = await next_event(q, "state", 30)
                    got = s["_at"]
                    assert s["query"] == new_view["query"]
                    # What the attention page asks for when it loads this view.
                    params = {k: v[0] for k, v in parse_qs(s["query"]).items()}
                    r = await client.post(f"{base}/api/text/attention",
                                          json={"text": params["text"], "layer": int(params["layer"]), "head": int(params["head"])})
                    return got, r.status_code

            tasks = [asyncio.create_task(one()) for _ in range(N_FOLLOWERS)]
            await asyncio.wait_for(connected.wait(), 60)
            assert (await client.get(f"{base}/api/rooms/{code}")).json()["followers"] == N_FOLLOWERS
            computed0 = (await client.get(f"{base}/healthz")).json()["text_runs"]["computed"]

            go_ahead.set()
            t0 = time.monotonic()
            r = await client.put(f"{base}/api/rooms/{code}/state", json=new_view, headers=secret_header(secret))
            assert r.status_code == 200
            results = await asyncio.wait_for(asyncio.gather(*tasks), 120)

            delays = sorted(got - t0 for got, _ in results)
            assert all(status == 200 for _, status in results)
            assert delays[-1] < DELIVERY_S, f"slowest follower got the change after {delays[-1]:.2f} s"
            computed1 = (await client.get(f"{base}/healthz")).json()["text_runs"]["computed"]
            assert computed1 - computed0 == 1  # 60 pages, one model run
            await client.delete(f"{base}/api/rooms/{code}", headers=secret_header(secret))
            print(f"60 followers: median {delays[len(delays) // 2] * 1000:.0f} ms, slowest {delays[-1] * 1000:.0f} ms")

    asyncio.run(go())
