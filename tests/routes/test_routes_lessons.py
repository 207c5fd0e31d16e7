"""The lessons over HTTP: GET /api/lessons and /api/lessons/{id}?example= (what the lesson panel reads),
the /lessons index, /lessons/{id} starting a lesson, the home page and nav linking them, and the panel
on every explorer page."""

from __future__ import annotations

import re
from html import unescape
from urllib.parse import parse_qsl, urlsplit

import pytest

from app.lessons import LESSONS
from app.routes.pages import DIFFUSION_VIEWS, TEXT_VIEWS, VISION_VIEWS

HTML = '<img src=x onerror=alert(1)> "it" & <b>tired</b>'
PAGES = ([f"/text/{v}" for v in TEXT_VIEWS] + [f"/vision/{v}" for v in VISION_VIEWS]
         + [f"/diffusion/{v}" for v in DIFFUSION_VIEWS])


def query(url: str) -> dict:
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


def test_all_lessons(client):
    r = client.get("/api/lessons")
    assert r.status_code == 200
    got = r.json()["lessons"]
    assert [x["id"] for x in got] == list(LESSONS)
    for x in got:
        lesson = LESSONS[x["id"]]
        assert x["example"] == x["default_example"] == lesson.example
        assert [s["url"] for s in x["steps"]] == [lesson.url(k) for k in range(1, len(lesson.steps) + 1)]
        assert [s["text"] for s in x["steps"]] == [s.text for s in lesson.steps]


def test_one_lesson_with_an_example(client):
    r = client.get("/api/lessons/gpt2-attention", params={"example": HTML})
    assert r.status_code == 200
    body = r.json()
    assert body["example"] == HTML and body["default_example"] == LESSONS["gpt2-attention"].example
    first = query(body["steps"][0]["url"])
    assert first["text"] == HTML and first["example"] == HTML and first["lesson"] == "gpt2-attention" and first["lstep"] == "1"
    assert all(query(s["url"])["lstep"] == str(k) for k, s in enumerate(body["steps"], 1))


@pytest.mark.parametrize("path,params,status,says", [
    ("/api/lessons/nope", {}, 404, "the lessons are: gpt2-attention, vit-image, diffusion"),
    ("/api/lessons/gpt2-attention", {"example": ""}, 422, "empty"),
    ("/api/lessons/diffusion", {"example": "a" * 1001}, 422, "at most 1,000"),
    ("/api/lessons/vit-image", {"example": "<script>"}, 422, "not a picture id"),
])
def test_bad_requests_say_what_is_wrong(client, path, params, status, says):
    r = client.get(path, params=params)
    assert r.status_code == status
    assert says in r.json()["detail"]


def test_start_redirects_to_the_first_step(client):
    r = client.get("/lessons/vit-image", params={"example": "scene-3"}, follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == LESSONS["vit-image"].url(1, "scene-3")
    # the index form sends the default (or nothing): the URL stays short
    for example in ("scene-1", ""):
        r = client.get("/lessons/vit-image", params={"example": example}, follow_redirects=False)
        assert r.headers["location"] == LESSONS["vit-image"].url(1)
    assert client.get("/lessons/nope", follow_redirects=False).status_code == 404


def test_index_lists_every_lesson_and_step(client):
    r = client.get("/lessons")
    assert r.status_code == 200
    links = [unescape(h) for h in re.findall(r'<a href="([^"]+)"><strong>', r.text)]
    for lesson in LESSONS.values():
        assert f'action="/lessons/{lesson.id}"' in r.text
        for k, step in enumerate(lesson.steps, 1):
            assert lesson.url(k) in links
            assert unescape(step.title) in unescape(r.text)
    assert '<option value="scene-1" selected>' in r.text  # the ViT lesson's picture, from the gallery
    assert 'href="/lessons" aria-current="page"' in r.text


def test_home_links_the_lessons(client):
    r = client.get("/")
    for lesson in LESSONS.values():
        assert f'href="/lessons#lesson-{lesson.id}"' in r.text
    assert '<li><a href="/lessons">Lessons</a></li>' in r.text  # the nav


@pytest.mark.parametrize("path", PAGES)
def test_every_explorer_page_has_the_hidden_panel(sd_client, path):
    r = sd_client.get(path, params={"lesson": "gpt2-attention", "lstep": "2", "example": HTML})
    assert r.status_code == 200
    assert '<aside id="lesson" class="lesson"' in r.text and " hidden>" in r.text.split('<aside id="lesson"', 1)[1].split("\n", 1)[0]
    assert 'src="/static/js/lesson.js"' in r.text
    assert "<img src=x" not in r.text  # the server never writes the example into the page; lesson.js sets it as text


def test_no_panel_where_there_is_no_explorer(client):
    for path in ("/", "/lessons"):
        assert 'id="lesson"' not in client.get(path).text
