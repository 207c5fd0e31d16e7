"""Hostile input, endpoint by endpoint: empty, over-long and 1 MB texts, NUL bytes, bodies that are
not UTF-8 or nest 100,000 deep, the wrong Content-Type, model names that are unknown or are paths
and Hub ids, absurd numbers, and for the ViT upload files that are not images, cut short or claim
10^10 pixels. Each case gets its own exact 4xx with the app's JSON error {"error", "detail"}, and
the server answers /healthz afterwards. Markup and NUL in a text are text: answered 200 and carried
back unchanged (the pages show them with textContent; tests/test_xss_browser.py)."""

from __future__ import annotations

import copy
import io
import json
import struct
import zlib

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.main import create_app
from app.schemas import PROMPT_LIMIT, TEXT_LIMIT
from app.settings import Settings

UPLOAD_MAX = 2**19  # 512 KiB here, so that 1 MB of anything is over it
MB = 2**20
TEXT = "the cat sat on the mat"
PROMPT = "a red circle"
RUN = {"prompt": PROMPT, "steps": 1}
HTML = '"><script>alert(1)</script><img src=x onerror=alert(1)>'

# Every POST endpoint with a JSON body: a body it answers 200, and where its user text goes.
ENDPOINTS = {
    "/api/text/trace": ({"text": TEXT}, "text"),
    "/api/text/attention": ({"text": TEXT, "layer": 0, "head": 0}, "text"),
    "/api/text/grid": ({"text": TEXT}, "text"),
    "/api/text/head": ({"text": TEXT, "layer": 0, "head": 0}, "text"),
    "/api/text/next": ({"text": TEXT}, "text"),
    "/api/text/generate": ({"text": TEXT, "seed": 1}, "text"),
    "/api/text/lens": ({"text": TEXT}, "text"),
    "/api/vision/trace": ({"image": "scene-1"}, "image"),
    "/api/vision/attention": ({"image": "scene-1", "layer": 0}, "image"),
    "/api/vision/rollout": ({"image": "scene-1"}, "image"),
    "/api/vision/heads": ({"image": "scene-1"}, "image"),
    "/api/vision/patch": ({"image": "scene-1", "patch": 0}, "image"),
    "/api/diffusion/run": (RUN, "prompt"),
    "/api/diffusion/layers": ({**RUN, "step": 0}, "prompt"),
    "/api/diffusion/decode": ({**RUN, "step": 0, "which": "x0"}, "prompt"),
    "/api/diffusion/paths": ({"runs": [RUN]}, "runs.0.prompt"),
    "/api/diffusion/forward": ({"t": 10}, "model"),  # no text of its own: the model name carries the string cases
}


@pytest.fixture(scope="module")
def hc(tiny_gpt2_dir, tiny_vit_dir, tiny_sd_dir):
    settings = Settings(gpt2=str(tiny_gpt2_dir), vit=str(tiny_vit_dir), sd=str(tiny_sd_dir), upload_max_bytes=UPLOAD_MAX)
    with TestClient(create_app(settings)) as c:
        # The base run, cached: /layers, /decode and /paths then answer 200, and reach their own checks.
        assert c.post("/api/diffusion/run", json=RUN).status_code == 200
        for path, (body, _) in ENDPOINTS.items():  # each base body is fine, so each refusal below is the case's doing
            r = c.post(path, json=body)
            assert r.status_code == 200, (path, r.text[:300])
        yield c


def with_value(body: dict, where: str, value) -> dict:
    """body with `value` at the dotted path `where` ("runs.0.prompt")."""
    out = copy.deepcopy(body)
    *parents, last = where.split(".")
    node = out
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    node[last] = value
    return out


def raw(c: TestClient, path: str, content: bytes, ctype: str = "application/json"):
    return c.post(path, content=content, headers={"content-type": ctype})


def refused(c: TestClient, r, *statuses: int) -> dict:
    """The answer is one of `statuses` with the app's JSON error, and the server still answers."""
    assert r.status_code in statuses, (r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("application/json"), r.headers["content-type"]
    body = r.json()
    assert {"error", "detail"} <= set(body) and all(isinstance(body[k], str) and body[k] for k in ("error", "detail")), body
    health = c.get("/healthz")
    assert health.status_code == 200 and health.json()["ok"] is True
    return body


# --- every JSON endpoint --------------------------------------------------------------------

PATHS = list(ENDPOINTS)


@pytest.mark.parametrize("path", PATHS)
def test_a_megabyte_of_text(hc, path):
    body, where = ENDPOINTS[path]
    r = hc.post(path, json=with_value(body, where, "a" * MB))
    # 422 by the field's max_length (for a model name, which has none: 404); 413 where a body-size bound
    # refuses it before it is read. Seen now: 413 (app/middleware.py's 256 KiB bound).
    refused(hc, r, 413, 404 if where == "model" else 422)


@pytest.mark.parametrize("path", PATHS)
def test_a_json_bomb(hc, path):
    # 100,000 nested arrays, 200 KB: json.loads gives up (RecursionError). Seen now: 422 (JSONBodyRoute);
    # a body-size bound below 200 KB would make it 413.
    refused(hc, raw(hc, path, b"[" * 100_000 + b"]" * 100_000), 413, 422)


@pytest.mark.parametrize("path", PATHS)
def test_a_body_that_is_not_utf8(hc, path):
    detail = refused(hc, raw(hc, path, b'{"text": "\xff\xfe\xfd", "prompt": "\xc3\x28"}'), 422)["detail"]
    assert "UTF-8" in detail


@pytest.mark.parametrize("path", PATHS)
def test_a_raw_nul_byte_in_the_json(hc, path):
    body, where = ENDPOINTS[path]
    content = json.dumps(with_value(body, where, "a@b")).replace("@", "\x00").encode()  # a control character: not JSON
    refused(hc, raw(hc, path, content), 422)


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"])
@pytest.mark.parametrize("path", PATHS)
def test_the_wrong_content_type(hc, path, ctype):
    body, _ = ENDPOINTS[path]
    content = json.dumps(body).encode() if ctype == "text/plain" else b"text=hi&layer=0"
    assert "application/json" in refused(hc, raw(hc, path, content, ctype), 415)["detail"]


@pytest.mark.parametrize("path", PATHS)
def test_not_an_object(hc, path):
    for content in (b"[]", b'"text"', b"null", b"42"):
        refused(hc, raw(hc, path, content), 422)


MODEL_NAMES = [
    "no-such-model",
    "gpt2",  # Hub ids: never downloaded because a request named them
    "openai/clip-vit-base-patch32",
    "CompVis/stable-diffusion-v1-4",
    "../models/gpt2-tinystories",  # paths: never loaded because a request named them
    "/etc/passwd",
    "models/vit-shapes",
    "",
]


@pytest.mark.parametrize("path", PATHS)
def test_only_the_configured_models_can_be_named(hc, path, tiny_gpt2_dir, tiny_vit_dir, tiny_sd_dir):
    reg = hc.app.state.registry
    before = (list(reg.text), list(reg.vision), list(reg.diffusion))
    body, _ = ENDPOINTS[path]
    # The served models' own folders too: a request names a model by its name, never by where it lives.
    for name in MODEL_NAMES + [str(tiny_gpt2_dir), str(tiny_vit_dir), str(tiny_sd_dir)]:
        b = with_value(body, "runs.0.model", name) if "runs" in body else {**body, "model": name}
        assert "Unknown model" in refused(hc, hc.post(path, json=b), 404)["detail"]
    assert (list(reg.text), list(reg.vision), list(reg.diffusion)) == before  # nothing was loaded


# --- the text a request carries ---------------------------------------------------------------

TEXT_PATHS = [p for p in PATHS if p.startswith("/api/text/")]


@pytest.mark.parametrize("path", TEXT_PATHS)
def test_text_empty_too_long_or_past_the_context(hc, path):
    body, _ = ENDPOINTS[path]
    assert "empty" in refused(hc, hc.post(path, json={**body, "text": ""}), 422)["detail"]
    assert "20000" in refused(hc, hc.post(path, json={**body, "text": "a" * (TEXT_LIMIT + 1)}), 422)["detail"]
    # Within the character limit, past the model's context (32 tokens for the tiny GPT-2).
    assert "Shorten" in refused(hc, hc.post(path, json={**body, "text": "the cat " * 500}), 422)["detail"]


@pytest.mark.parametrize("path", ["/api/text/trace", "/api/text/attention"])
@pytest.mark.parametrize("text", ["<img src=x onerror=alert(1)>", '"><script>alert(1)</script>', "a\x00b", "\x00"])
def test_markup_and_nul_in_a_text_are_text(hc, path, text):
    """Not refused: GPT-2's byte-level tokens read any character. Carried back unchanged, as JSON.
    (Short: the tiny GPT-2 reads 32 tokens.)"""
    body, _ = ENDPOINTS[path]
    r = hc.post(path, json={**body, "text": text})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert "".join(t["text"] for t in r.json()["tokens"]) == text


VISION_PATHS = [p for p in PATHS if p.startswith("/api/vision/")]


@pytest.mark.parametrize("path", VISION_PATHS)
@pytest.mark.parametrize(
    "image, status",
    [
        ("", 422), ("a" * 65, 422), ("scene-1\x00", 422), (HTML, 422), ("../../etc/passwd", 422), ("Scene-1", 422),
        ("scene-999", 404), ("u-" + "0" * 24, 404),  # no such gallery picture; an upload never made (or let go)
    ],
)
def test_picture_ids(hc, path, image, status):
    body, _ = ENDPOINTS[path]
    refused(hc, hc.post(path, json={**body, "image": image}), status)


DIFFUSION_PATHS = [p for p in PATHS if p.startswith("/api/diffusion/") and not p.endswith("/forward")]


@pytest.mark.parametrize("path", DIFFUSION_PATHS)
def test_a_prompt_over_the_limit(hc, path):
    body, where = ENDPOINTS[path]
    assert str(PROMPT_LIMIT) in refused(hc, hc.post(path, json=with_value(body, where, "a" * (PROMPT_LIMIT + 1))), 422)["detail"]


def sse_head(r) -> dict:
    events = [block for block in r.text.split("\n\n") if block]
    assert events[0].startswith("event: head\n") and events[-1].startswith("event: done\n"), r.text[:300]
    return json.loads(events[0].split("data: ", 1)[1])


@pytest.mark.parametrize("prompt", ["", HTML, "a\x00b"])
def test_an_empty_or_odd_prompt_is_drawn(hc, prompt):
    """Empty draws unconditionally (the API says so); markup and NUL are text to the tokenizer."""
    r = hc.post("/api/diffusion/run", json={**RUN, "prompt": prompt})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    head = sse_head(r)
    assert head["steps_asked"] == 1 and head["tokens"][0] == "<|startoftext|>"


# --- absurd numbers ---------------------------------------------------------------------------

NAN, INF = float("nan"), float("inf")
ABSURD = [
    # (endpoint, field, value): each one alone makes the base body invalid
    *[("/api/text/attention", "layer", v) for v in (-1, 10**9, "0", False, 0.5, None)],
    *[("/api/text/head", "head", v) for v in (-1, 10**9, True)],
    *[("/api/text/next", "temperature", v) for v in (0, -1, 5e-324, 1e9, NAN, INF, -INF, "1", True)],
    *[("/api/text/next", "k", v) for v in (0, -1, 10**9, 2.5)],
    *[("/api/text/generate", "temperature", v) for v in (5e-324, NAN)],
    *[("/api/text/generate", "seed", v) for v in (-1, 2**32, 10**30)],
    *[("/api/text/lens", "k", v) for v in (0, 10**9)],
    *[("/api/vision/attention", "layer", v) for v in (-1, 10**9)],
    ("/api/vision/attention", "head", 10**9),
    *[("/api/vision/rollout", "source", v) for v in (-1, 10**9)],
    *[("/api/vision/patch", "patch", v) for v in (-1, 10**9, False)],
    *[("/api/diffusion/run", "steps", v) for v in (0, -1, 10**9, 101, 2.5, "20", False)],
    *[("/api/diffusion/run", "guidance", v) for v in (NAN, INF, -INF, 1e9, -1, False)],
    *[("/api/diffusion/run", "seed", v) for v in (-1, 2**32)],
    *[("/api/diffusion/run", "scheduler", v) for v in ("../../etc/passwd", "DDIM", "")],
    *[("/api/diffusion/layers", "step", v) for v in (-1, 10**9)],  # the run is cached: 10**9 reaches the range check
    *[("/api/diffusion/decode", "step", v) for v in (-1, 10**9)],
    ("/api/diffusion/decode", "which", "pixels"),
    *[("/api/diffusion/layers", "steps", v) for v in (0, -1, 10**9)],
    *[("/api/diffusion/paths", "runs", v) for v in ([], [RUN] * 9, None)],
    *[("/api/diffusion/forward", "t", v) for v in (-1, 1000, 10**9, NAN)],
    *[("/api/diffusion/forward", "scene", v) for v in (-1, 10**9)],
    ("/api/diffusion/forward", "seed", -1),
]


@pytest.mark.parametrize("path, field, value", ABSURD, ids=[f"{p.split('/api/')[1]}-{f}={v!r}"[:60] for p, f, v in ABSURD])
def test_absurd_numbers(hc, path, field, value):
    body, _ = ENDPOINTS[path]
    # json.dumps writes NaN and Infinity as the bare words a client could send (httpx refuses to)
    detail = refused(hc, raw(hc, path, json.dumps({**body, field: value}).encode()), 422)["detail"]
    assert field in detail, detail  # the message names what to change


def test_steps_over_the_servers_own_bound(tiny_gpt2_dir, tiny_sd_dir):
    """max_diffusion_steps is a setting: a server started with 3 refuses 4 (the schema allows 100)."""
    with TestClient(create_app(Settings(gpt2=str(tiny_gpt2_dir), vit="", sd=str(tiny_sd_dir), max_diffusion_steps=3))) as c:
        assert "at most 3" in refused(c, c.post("/api/diffusion/run", json={**RUN, "steps": 4}), 422)["detail"]
        assert c.post("/api/diffusion/run", json={**RUN, "steps": 3}).status_code == 200


# --- the ViT upload ---------------------------------------------------------------------------


def png(w: int = 40, h: int = 30) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (200, 30, 30)).save(buf, "PNG")
    return buf.getvalue()


def png_claiming(w: int, h: int) -> bytes:
    """A valid PNG header that claims w × h pixels, with almost no data: a decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def upload(c, data: bytes, ctype: str = "image/png", **params):
    return c.post("/api/vision/upload", params={"name": "x.png", **params}, content=data, headers={"content-type": ctype})


UPLOADS = {
    "text": (b"hello, this is not a picture", "text/plain", 415),
    "empty": (b"", "image/png", 415),
    "truncated PNG": (png(400, 300)[:200], "image/png", 415),
    "PNG signature only": (png()[:8], "image/png", 415),
    "SVG with a script": (b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>', "image/svg+xml", 415),
    "HTML": (b"<html><script>alert(1)</script></html>", "text/html", 415),
    "not UTF-8 either": (b"\xff\xfe\xfd\x00\x01", "application/octet-stream", 415),
    "JSON": (b'{"image": "scene-1"}', "application/json", 415),
    "a form": (b"--x\r\nContent-Disposition: form-data; name=file\r\n\r\nabc\r\n--x--\r\n", "multipart/form-data; boundary=x", 415),
    "decompression bomb header": (png_claiming(100_000, 100_000), "image/png", 413),
    "1 MB": (b"\x89PNG\r\n\x1a\n" + b"\x00" * MB, "image/png", 413),  # over upload_max_bytes
}


@pytest.mark.parametrize("case", list(UPLOADS))
def test_uploads_that_are_not_pictures(hc, case):
    data, ctype, status = UPLOADS[case]
    refused(hc, upload(hc, data, ctype), status)


def test_upload_parameters(hc, tiny_vit_dir):
    refused(hc, upload(hc, png(), name="a" * 201), 422)  # the name is at most 200 characters
    for model in ("nope", str(tiny_vit_dir), "google/vit-base-patch16-224", "../models/vit-shapes"):
        refused(hc, upload(hc, png(), model=model), 404)


@pytest.mark.parametrize("name", ["<img src=x onerror=alert(1)>.png", '"><script>alert(1)</script>.png', "a\x00b.png", "x.png"])
def test_an_upload_is_answered_with_its_own_name(hc, name):
    """Names are user text, carried back unchanged. The same bytes share one cached trace: the answer
    still carries this upload's name, not the first uploader's (it did: a bug this corpus found)."""
    r = upload(hc, png(), name=name)
    assert r.status_code == 200, r.text[:300]
    assert r.json()["name"] == name
    # Asking for the shared trace by its id tells no one any uploader's name.
    again = hc.post("/api/vision/trace", json={"image": r.json()["image"]})
    assert again.status_code == 200 and again.json()["name"] == "upload"


# --- the GET endpoints ------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/models", "/api/vision/gallery"])
def test_get_endpoints_ignore_a_hostile_query(hc, path):
    r = hc.get(path, params={"x": HTML, "model": "../etc/passwd", "n": "\x00" * 100})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert "<script>" not in r.text  # nothing of the query is reflected


@pytest.mark.parametrize("method, path", [("POST", "/api/models"), ("GET", "/api/text/trace"), ("GET", "/api/no-such-thing")])
def test_wrong_method_or_path_gets_the_app_error_shape(hc, method, path):
    refused(hc, hc.request(method, path), 404, 405)
