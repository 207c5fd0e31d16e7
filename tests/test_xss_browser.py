"""Markup typed or uploaded by a user, in Chromium against the real server: prompts, texts and file
names such as <img src=x onerror=alert(1)> render as text on the GPT-2 pages, the ViT page and the
diffusion page. The `page` fixture of test_pages_browser.py fails a test on any dialog (what an
injected alert(1) would open), console error (a CSP violation by an injected script is one), page
error, failed request or unprovoked 4xx/5xx; each test also checks the literal text is on the page
and that no element the markup describes was created."""

from __future__ import annotations

import io
from urllib.parse import urlencode

import pytest
from PIL import Image

from test_pages_browser import TIMEOUT_MS, api, browser, labels, page  # noqa: F401 (fixtures)

pytestmark = pytest.mark.browser

PAYLOADS = ["<img src=x onerror=alert(1)>", '"><script>alert(1)</script>']
# A file name cannot hold "/", so the second upload breaks out of an attribute with an <svg> instead.
FILE_NAMES = ["<img src=x onerror=alert(1)>.png", '"><svg onload=alert(1)>.png']


def nothing_injected(page) -> None:
    """No element the markup describes exists, and an injected handler had time to fire (the
    fixture then fails on its dialog or console error)."""
    page.wait_for_timeout(500)
    found = page.evaluate(
        """() => ({
            imgs: document.querySelectorAll('img[src="x"], img[onerror], svg[onload]').length,
            inline: [...document.scripts].filter((s) => !s.src || s.textContent.includes('alert')).length,
        })"""
    )
    assert found == {"imgs": 0, "inline": 0}, found


def chips(page, container: str = "#tokens") -> str:
    return "".join(page.locator(f"{container} .token .txt").all_inner_texts())


def wait_chips(page, text: str, container: str = "#tokens") -> None:
    page.wait_for_function(
        "([sel, text]) => [...document.querySelectorAll(sel + ' .token .txt')].map((e) => e.textContent).join('') === text",
        arg=[container, text],
    )


# --- GPT-2 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("payload", PAYLOADS)
def test_text_typed_on_the_attention_and_next_pages(page, payload):
    for view in ("attention", "next"):
        page.goto(f"/text/{view}")
        page.wait_for_function("() => document.querySelector('#heatmap .xtick') !== null")
        page.fill("#text", payload)
        page.press("#text", "Enter")
        wait_chips(page, payload)
        assert chips(page) == payload  # the token chips read back the literal text
        nothing_injected(page)


@pytest.mark.parametrize("payload", PAYLOADS)
def test_text_from_the_link_on_the_head_lens_and_heads_pages(page, live_server, payload):
    expected = labels(api(live_server, "/api/text/trace", {"text": payload}).json()["tokens"])

    page.goto("/text/head?" + urlencode({"text": payload}))
    page.wait_for_function("() => document.querySelector('#step-plots .plot .main-svg') !== null")
    ticks = page.evaluate("() => [...document.querySelectorAll('#step-plots .ytick text')].map((e) => e.textContent)")
    assert set(expected) <= set(ticks), (expected, ticks)  # step 1 (X) has a row per token, labelled literally
    assert page.input_value("#text") == payload
    nothing_injected(page)

    page.goto("/text/lens?" + urlencode({"text": payload}))
    page.wait_for_function("() => document.querySelectorAll('#lens-table tbody tr').length > 0")
    heads = page.locator("#lens-table thead th").all_inner_texts()
    assert [h for h in heads if "·" in h] == expected  # one column per token, its text literal
    nothing_injected(page)

    page.goto("/text/heads?" + urlencode({"text": payload}))
    page.wait_for_function("() => (document.getElementById('grid').data || []).length > 0")
    assert page.input_value("#text") == payload
    nothing_injected(page)


def test_two_payloads_side_by_side_on_the_compare_page(page):
    a, b = PAYLOADS
    page.goto("/text/compare?" + urlencode({"a": a, "b": b}))
    wait_chips(page, a, "#tokens-a")
    wait_chips(page, b, "#tokens-b")
    page.wait_for_function("() => document.getElementById('chart-a').data && document.getElementById('chart-b').data")
    # the chart titles quote the followed token through plotlyText: shown as text, never as markup
    titles = page.evaluate("() => [...document.querySelectorAll('#chart-a .gtitle, #chart-b .gtitle')].map((e) => e.textContent)")
    assert all("“" in t for t in titles), titles
    nothing_injected(page)


# --- ViT --------------------------------------------------------------------------------------


def picture() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (48, 48), (30, 160, 60)).save(buf, "PNG")
    return buf.getvalue()


def test_uploaded_file_names_on_the_vit_page(page):
    page.goto("/vision/prediction")
    page.wait_for_function("() => (document.getElementById('bars').data || []).length === 1")
    data = picture()  # the same bytes twice: the second upload must still show its own name
    for name in FILE_NAMES:
        page.set_input_files("#upload", files=[{"name": name, "mimeType": "image/png", "buffer": data}])
        page.wait_for_function("(n) => document.getElementById('picture-name').textContent === n", arg=name)
        page.wait_for_url(lambda u: "image=u-" in u)
        option = page.locator("#gallery option[data-upload]")
        assert option.inner_text() == f"Your upload: {name}"
        nothing_injected(page)


# --- Stable Diffusion -------------------------------------------------------------------------


@pytest.mark.parametrize("payload", PAYLOADS)
def test_prompt_on_the_diffusion_page(page, payload):
    page.goto("/diffusion/generate?" + urlencode({"prompt": payload, "negative": payload, "steps": 1}))
    page.wait_for_function("() => document.getElementById('progress-text').textContent.startsWith('Done')", timeout=TIMEOUT_MS)
    assert page.input_value("#prompt") == payload and page.input_value("#negative") == payload
    words = page.locator("#words .token .txt").all_inner_texts()
    assert "<" in "".join(words) and words, words  # the prompt's tokens, markup characters shown as text
    nothing_injected(page)

    page.fill("#prompt", payload + " again")  # typed, run again
    page.press("#prompt", "Enter")
    page.wait_for_function("() => document.getElementById('progress-text').textContent.startsWith('Done')", timeout=TIMEOUT_MS)
    nothing_injected(page)
