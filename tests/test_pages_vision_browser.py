"""The ViT pages in Chromium against the real server, with the fixtures of test_pages_browser.py: every
test fails on a console error, a page error, a failed request, an unprovoked 4xx/5xx or a dialog."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image

from app.settings import ROOT
from test_pages_browser import ARTIFACTS, TIMEOUT_MS, api, browser, page  # noqa: F401 (fixtures)

pytestmark = pytest.mark.browser
XSS_NAME = "<img src=x onerror=alert(1)>.png"


def heat_of(page, div: str = "image"):
    """The heatmap values drawn over the picture (Plotly's own data)."""
    return page.evaluate(f"() => document.getElementById('{div}').data[0].z")


def wait_heat(page, div: str = "image"):
    page.wait_for_function(
        f"() => {{ const d = document.getElementById('{div}').data; return d && d[0] && d[0].showscale; }}"
    )


def click_patch(page, div: str, patch: int, cols: int, patch_px: int) -> None:
    """Click the centre of a patch of the picture figure in #div."""
    r, c = divmod(patch, cols)
    x, y = page.evaluate(
        """([div, px, py]) => {
            const gd = document.getElementById(div);
            gd.scrollIntoView();
            const r = gd.getBoundingClientRect();
            const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
            return [r.left + xa._offset + xa.l2p(px), r.top + ya._offset + ya.l2p(py)];
        }""",
        [div, (c + 0.5) * patch_px, (r + 0.5) * patch_px],
    )
    page.mouse.click(x, y)


def photo_png() -> bytes:
    a = np.zeros((120, 90, 3), np.uint8)  # portrait, a red disc-ish block on white
    a[:] = 250
    a[30:80, 20:70] = (210, 40, 40)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


def test_attention_page_gallery_upload_and_click(page, live_server):
    page.goto("/vision/attention")
    wait_heat(page)
    assert page.input_value("#gallery") == "scene-1"
    caption = page.locator("#picture-name").inner_text()
    assert caption.endswith("arrow in the centre")
    from_cls = heat_of(page)
    assert len(from_cls) == 8 and len(from_cls[0]) == 8  # the shipped 8 × 8 patch grid
    m = page.evaluate("() => document.getElementById('matrix').data[0].z.length")
    assert m == 65

    # what the page draws is the API's CLS row, reshaped to the grid
    want = api(live_server, "/api/vision/attention", {"image": "scene-1", "layer": 0}).json()
    from app.wire import decode

    row = decode(want["attention"])[0, 1:].reshape(8, 8)
    np.testing.assert_allclose(np.array(from_cls, dtype=float), row, atol=1e-3)

    # click a patch: the overlay becomes that patch's attention, the URL remembers it
    click_patch(page, "image", 27, cols=8, patch_px=8)
    page.wait_for_url(re.compile(r"from=28"))
    page.wait_for_function("(z0) => JSON.stringify(document.getElementById('image').data[0].z) !== JSON.stringify(z0)", arg=from_cls)
    from_patch = np.array(heat_of(page), dtype=float)
    np.testing.assert_allclose(from_patch, decode(want["attention"])[28, 1:].reshape(8, 8), atol=1e-3)
    assert "patch 27 (row 3, col 3)" in page.locator("#overlay-caption").inner_text()
    assert page.input_value("#from") == "28"

    # a head instead of the mean
    page.select_option("#layer", "3")
    page.select_option("#head", "2")
    page.wait_for_url(re.compile(r"layer=3&head=2"))
    page.wait_for_function("(z0) => JSON.stringify(document.getElementById('image').data[0].z) !== JSON.stringify(z0)", arg=from_patch.tolist())

    # pick another gallery picture
    page.select_option("#gallery", "scene-2")
    page.wait_for_url(re.compile(r"image=scene-2"))
    sync_expect_text(page, "#picture-name", "ring")

    # upload a file whose name is markup: shown literally, nothing runs
    page.set_input_files("#upload", files=[{"name": XSS_NAME, "mimeType": "image/png", "buffer": photo_png()}])
    page.wait_for_url(re.compile(r"image=u-"))
    sync_expect_text(page, "#picture-name", XSS_NAME)
    assert "PNG 90 × 120" in page.locator("#picture-info").inner_text()
    assert page.evaluate("() => document.querySelectorAll('img[src=\"x\"]').length") == 0
    wait_heat(page)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "vision_attention.png"), full_page=True)


def sync_expect_text(page, selector: str, text: str) -> None:
    from playwright.sync_api import expect

    expect(page.locator(selector)).to_contain_text(text, timeout=TIMEOUT_MS)


def test_bad_upload_shows_the_reason(page, live_server):
    page.watch.allow(415)
    page.goto("/vision/prediction")
    page.wait_for_function("() => (document.getElementById('bars').data || []).length === 1")
    page.set_input_files("#upload", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hello, not a picture"}])
    sync_expect_text(page, "#error", "not an image")
    assert page.input_value("#gallery") == "scene-1"  # the page still shows the last good picture


def test_rollout_slider(page, live_server):
    page.goto("/vision/rollout?image=scene-3")
    wait_heat(page)
    assert page.input_value("#step") == "3"  # starts after the last layer
    last = heat_of(page)
    page.fill("#step", "0")  # a range input: fill sets the value and fires input
    page.wait_for_url(re.compile(r"step=0"))
    first = heat_of(page)
    assert first != last
    from app.wire import decode

    r = decode(api(live_server, "/api/vision/rollout", {"image": "scene-3"}).json()["rollout"])
    np.testing.assert_allclose(np.array(first, dtype=float), r[0, 1:].reshape(8, 8), atol=1e-3)
    np.testing.assert_allclose(np.array(last, dtype=float), r[3, 1:].reshape(8, 8), atol=1e-3)
    assert "after layer 0" in page.locator("#rollout-caption").inner_text()
    # follow a patch instead of CLS, from the keyboard-reachable select
    page.select_option("#from", "10")
    page.wait_for_url(re.compile(r"from=10"))
    sync_expect_text(page, "#rollout-caption", "patch 9 (row 1, col 1)")
    p = decode(api(live_server, "/api/vision/rollout", {"image": "scene-3", "source": 10}).json()["rollout"])
    np.testing.assert_allclose(np.array(heat_of(page), dtype=float), p[0, 1:].reshape(8, 8), atol=1e-3)
    # keyboard: the slider steps with the arrow keys
    page.focus("#step")
    page.keyboard.press("ArrowRight")
    page.wait_for_url(re.compile(r"step=1"))
    page.screenshot(path=str(ARTIFACTS / "vision_rollout.png"), full_page=True)


def test_patches_hover_follows_a_patch(page):
    page.goto("/vision/patches?image=scene-1&patch=9")
    page.wait_for_function("() => (document.getElementById('embedding').data || []).length === 1")
    sync_expect_text(page, "#patch-caption", "patch 9 (row 1, col 1)")
    assert page.evaluate("() => document.getElementById('flat').data[0].z.map((r) => r.length)") == [64, 64, 64]
    assert page.evaluate("() => document.getElementById('embedding').data[0].z.map((r) => r.length)") == [128, 128, 128]
    page.select_option("#patch", "36")
    sync_expect_text(page, "#patch-caption", "patch 36 (row 4, col 4)")
    page.wait_for_url(re.compile(r"patch=36"))
    page.screenshot(path=str(ARTIFACTS / "vision_patches.png"), full_page=True)


def test_heads_and_prediction(page, live_server):
    page.goto("/vision/heads?image=scene-2")
    page.wait_for_function("() => (document.getElementById('distance').data || []).length === 4")
    page.wait_for_function("() => (document.getElementById('pos-sim').data || []).length === 1")
    z = page.evaluate("() => document.getElementById('pos-sim').data[0].z")
    assert len(z) == 8 * 9 - 1 and z[0][0] == pytest.approx(1, abs=1e-3)  # patch 0 vs itself
    page.screenshot(path=str(ARTIFACTS / "vision_heads.png"), full_page=True)

    page.goto("/vision/prediction?image=scene-2")
    page.wait_for_function("() => (document.getElementById('bars').data || []).length === 1")
    probs = page.evaluate("() => document.getElementById('bars').data[0].x")
    top = api(live_server, "/api/vision/trace", {"image": "scene-2"}).json()["top"]
    assert probs == pytest.approx([c["prob"] for c in top], abs=1e-6)
    sync_expect_text(page, "#prediction-caption", f"“{top[0]['label']}”")


def test_nav_and_home_list_the_vision_pages(page):
    page.goto("/")
    for path in ("/vision/patches", "/vision/attention", "/vision/rollout", "/vision/heads", "/vision/prediction"):
        assert page.locator(f".cards a[href='{path}']").count() == 1
        assert page.locator(f"nav a[href='{path}']").count() == 1
    assert "vit-shapes" in page.locator("table.models").inner_text()


def test_reload_restores_the_whole_view(page, live_server):
    """The URL is the view: picture, layer, head, the patch looked from and the opacity come back
    after a reload, and the overlay drawn is the same."""
    page.goto("/vision/attention?" + "image=scene-3&layer=2&head=1&from=12&opacity=0.35")
    wait_heat(page)
    before = {k: page.input_value(f"#{k}") for k in ("gallery", "layer", "head", "from", "opacity")}
    assert before == {"gallery": "scene-3", "layer": "2", "head": "1", "from": "12", "opacity": "0.35"}
    heat = heat_of(page)
    url = page.url
    page.reload()
    wait_heat(page)
    assert page.url == url
    assert {k: page.input_value(f"#{k}") for k in before} == before
    assert heat_of(page) == heat
    # and a change made on the page is in the URL, so a reload keeps it too
    page.select_option("#layer", "3")
    page.wait_for_url(re.compile(r"layer=3"))
    page.reload()
    wait_heat(page)
    assert page.input_value("#layer") == "3" and page.input_value("#from") == "12"
