"""More than one process: two `python -m app serve` processes sharing one real redis-server
(GLASSBOX_REDIS_URL), as `--workers 2` or two servers behind a proxy would. A presenter on one,
followers on the other; one trace computed once for both; `--workers` itself."""

from __future__ import annotations

import asyncio
import io
import json
import os
import random
import subprocess
import sys
import threading
import time

import httpx
import pytest

from app.settings import ROOT
from app.shapes import random_scene, render
from tests.conftest import server_process
from tests.routes.test_routes_rooms import ATTENTION, HEADS, assert_error, follower, followers_of, next_event, secret_header
from tests.routes.test_routes_diffusion import sse

pytestmark = pytest.mark.slow


def env_for(redis_url: str, gpt2, vit="", sd="", db: int = 0) -> dict:
    return {"GLASSBOX_REDIS_URL": f"{redis_url}/{db}", "GLASSBOX_GPT2": str(gpt2), "GLASSBOX_VIT": str(vit),
            "GLASSBOX_SD": str(sd), "GLASSBOX_TORCH_THREADS": "1", "GLASSBOX_ROOM_PING_S": "0.5",
            "GLASSBOX_MAX_FOLLOWERS_PER_ROOM": "3"}


@pytest.fixture(scope="module")
def two_servers(redis_url, tiny_gpt2_dir, tiny_vit_dir, tiny_sd_dir):
    env = env_for(redis_url, tiny_gpt2_dir, tiny_vit_dir, tiny_sd_dir)
    with server_process(env) as one, server_process(env) as two:
        yield one, two


def computed(base: str, kind: str = "text_runs") -> int:
    return httpx.get(base + "/healthz", timeout=30).json()[kind]["computed"]


def test_a_presenter_on_one_process_drives_followers_on_the_other(two_servers):
    one, two = two_servers

    async def go():
        async with httpx.AsyncClient(timeout=30) as client:
            room = (await client.post(f"{one}/api/rooms", json=ATTENTION)).json()
            code, secret = room["code"], room["secret"]
            async with follower(client, two, code) as a, follower(client, two, code) as b, follower(client, one, code) as c:
                for q in (a, b, c):
                    assert (await next_event(q, "state"))["query"] == ATTENTION["query"]
                await followers_of(client, one, code, 3)  # counted over both processes
                await followers_of(client, two, code, 3)
                full = await client.get(f"{two}/api/rooms/{code}/events")  # a fourth: the bound is the room's
                assert_error(full, 503)

                t0 = time.monotonic()
                r = await client.put(f"{one}/api/rooms/{code}/state", json=HEADS, headers=secret_header(secret))
                assert r.status_code == 200 and r.json()["version"] == 2
                for q in (a, b, c):
                    s = await next_event(q, "state", 5)
                    assert (s["version"], s["path"], s["query"]) == (2, HEADS["path"], HEADS["query"])
                assert time.monotonic() - t0 < 3  # pushed over pub/sub, not found at a keep-alive

                # The presenter's next word arrives through the other process: the secret is the room's.
                r = await client.put(f"{two}/api/rooms/{code}/state", json=ATTENTION, headers=secret_header(secret))
                assert r.status_code == 200 and r.json()["version"] == 3
                for q in (a, b, c):
                    assert (await next_event(q, "state", 5))["version"] == 3

                await client.delete(f"{two}/api/rooms/{code}", headers=secret_header(secret))
                for q in (a, b, c):
                    assert (await next_event(q, "closed", 5))["code"] == code
            for base in (one, two):
                assert_error(await client.get(f"{base}/api/rooms/{code}"), 404)

    asyncio.run(go())


def test_a_follower_cannot_drive_on_either_process(two_servers):
    one, two = two_servers
    room = httpx.post(f"{one}/api/rooms", json=ATTENTION).json()
    code, secret = room["code"], room["secret"]
    for base in (one, two):
        for headers in ({}, secret_header("a follower's guess"), secret_header(secret[:-1])):
            assert_error(httpx.put(f"{base}/api/rooms/{code}/state", json=HEADS, headers=headers), 403)
            assert_error(httpx.post(f"{base}/api/rooms/{code}/alive", headers=headers), 403)
            assert_error(httpx.delete(f"{base}/api/rooms/{code}", headers=headers), 403)
        assert httpx.get(f"{base}/api/rooms/{code}").json()["version"] == 1  # nothing changed
    assert httpx.delete(f"{two}/api/rooms/{code}", headers=secret_header(secret)).status_code == 204


def test_the_same_trace_is_computed_once_for_both(two_servers):
    one, two = two_servers
    before = computed(one) + computed(two)

    # At the same moment on both: one computes, the other waits for it (a Redis lock).
    body = {"text": "the cat sat on the mat and the dog ran"}
    answers = [None, None]

    def ask(i, base):
        answers[i] = httpx.post(f"{base}/api/text/trace", json=body, timeout=120)

    threads = [threading.Thread(target=ask, args=(i, base)) for i, base in enumerate((one, two))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [a.status_code for a in answers] == [200, 200]
    assert answers[0].json() == answers[1].json()
    assert computed(one) + computed(two) == before + 1

    # One after the other: the second process finds it in Redis; every view of it is served.
    body = {"text": "a dog ran to the park"}
    first = httpx.post(f"{one}/api/text/trace", json=body, timeout=120).json()
    assert httpx.post(f"{two}/api/text/trace", json=body, timeout=120).json() == first
    att = [httpx.post(f"{b}/api/text/attention", json={**body, "layer": 1, "head": 2}, timeout=120).json() for b in (one, two)]
    assert att[0] == att[1]
    assert computed(one) + computed(two) == before + 2


def test_an_upload_traced_on_one_process_is_found_on_the_other(two_servers):
    one, two = two_servers
    img, _ = render(random_scene(random.Random(7)), 48)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    up = httpx.post(f"{one}/api/vision/upload?name=mine.png", content=buf.getvalue(),
                    headers={"content-type": "image/png"}, timeout=120)
    assert up.status_code == 200, up.text
    image = up.json()["image"]
    assert image.startswith("u-")
    r = httpx.post(f"{two}/api/vision/attention", json={"image": image, "layer": 0, "head": 0}, timeout=120)
    assert r.status_code == 200, r.text  # not "upload it again": the other process shares its trace


def test_a_finished_diffusion_run_is_shared(two_servers):
    one, two = two_servers
    body = {"prompt": "a red circle", "steps": 2, "guidance": 3.0, "seed": 5}
    with httpx.stream("POST", f"{one}/api/diffusion/run", json=body, timeout=300) as r:
        assert r.status_code == 200
        first = [e for e, _ in sse(r.iter_lines())]
    assert first[-1] == "done"
    before = computed(two, "diffusion_runs")
    r = httpx.post(f"{two}/api/diffusion/layers", json={**body, "step": 1}, timeout=120)
    assert r.status_code == 200, r.text  # the finished run, from Redis
    r = httpx.post(f"{two}/api/diffusion/export", json=body, timeout=120)
    assert r.status_code == 200 and r.content[:2] == b"PK"  # its .npz download too
    with httpx.stream("POST", f"{two}/api/diffusion/run", json=body, timeout=300) as r:
        replay = list(sse(r.iter_lines()))
    assert [e for e, _ in replay] == first
    assert json.loads(replay[-1][1])["image"].startswith("data:image/png")
    assert computed(two, "diffusion_runs") == before  # replayed, not computed again


def test_workers_without_redis_are_refused_in_one_line():
    env = {"GLASSBOX_REDIS_URL": "", "GLASSBOX_PORT": "1"}
    p = subprocess.run([sys.executable, "-m", "app", "serve", "--workers", "2"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120, env={**os.environ, **env})
    assert p.returncode != 0
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "--workers 2 needs --redis-url" in lines[0], p.stderr


def test_workers_share_rooms_and_traces(redis_url, tiny_gpt2_dir):
    """`glassbox serve --workers 2`: both workers start from the app factory and load the models, and
    a room or a trace made on one is the other's too. A kept-alive connection stays with the worker
    that accepted it, so fresh ones are opened until two workers have answered."""
    env = env_for(redis_url, tiny_gpt2_dir, db=3)
    with server_process(env, ("--workers", "2")) as base:
        clients: dict[int, httpx.Client] = {}
        for _ in range(100):
            c = httpx.Client(base_url=base, timeout=120)
            pid = c.get("/healthz").json()["pid"]
            if pid in clients or len(clients) == 2:
                c.close()
            else:
                clients[pid] = c
            if len(clients) == 2:
                break
        assert len(clients) == 2, "only one worker ever answered"
        a, b = clients.values()
        try:
            room = a.post("/api/rooms", json=ATTENTION).json()
            assert b.get(f"/api/rooms/{room['code']}").json()["version"] == 1
            assert b.put(f"/api/rooms/{room['code']}/state", json=HEADS, headers=secret_header(room["secret"])).status_code == 200
            assert a.get(f"/api/rooms/{room['code']}").json()["version"] == 2
            body = {"text": "the cat ran"}
            assert a.post("/api/text/trace", json=body).json() == b.post("/api/text/trace", json=body).json()
            assert sum(c.get("/healthz").json()["text_runs"]["computed"] for c in (a, b)) == 1
        finally:
            for c in clients.values():
                c.close()
