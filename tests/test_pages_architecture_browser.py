"""The architecture pages in Chromium against the real server, with the fixtures of
test_pages_browser.py (every test fails on a console error, a failed request or a dialog): as many
blocks as the model has layers, every block reachable with the keyboard, a block's link opening its
view on its layer, the UNet's cross-attention layers marked where the prompt's K and V enter."""

from __future__ import annotations

import re

import pytest

from test_pages_browser import ARTIFACTS, api, browser, page  # noqa: F401 (fixtures)

pytestmark = pytest.mark.browser


def wait_map(page, kind: str, n: int) -> None:
    page.wait_for_function(
        "([kind, n]) => document.querySelectorAll(`.arch-node[data-kind='${kind}']`).length === n"
        " && document.querySelectorAll('svg.arch-edges path.edge').length > 0",
        arg=[kind, n],
    )


def every_head_is_reachable(page) -> bool:
    """Each box's head is a link or focusable: Tab reaches all of them."""
    return page.evaluate(
        "() => [...document.querySelectorAll('.arch-head')].every((h) => (h.tagName === 'A' && h.href) || h.tabIndex === 0)"
    )


def test_text_map_has_every_block_and_opens_layer_2s_attention(page, live_server):
    m = api(live_server, "/api/models").json()["text"][0]
    page.goto("/text/architecture")
    wait_map(page, "block", m["n_layers"])
    assert page.locator(".arch-node[data-kind='block']").count() == m["n_layers"]
    assert page.locator(".arch-node[data-kind='attention']").count() == m["n_layers"]
    assert every_head_is_reachable(page)
    assert f"{m['params']:,} parameters" in page.inner_text("#summary")

    # Tab walks to layer 2's attention; its details show beside the map.
    target = "transformer.h.2.attn"
    for _ in range(120):
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement.dataset.id") == target:
            break
    else:
        pytest.fail(f"Tab never reached {target}")
    details = page.inner_text("#arch-details")
    assert target in details and "Captured here (6)" in details and "blocks.2.attn.hook_pattern" in details
    page.wait_for_url(re.compile(r"node=transformer\.h\.2\.attn"))
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "architecture-text.png"), full_page=True)

    page.click(f".arch-node[data-name='{target}'] > a.arch-head")
    page.wait_for_url(re.compile(r"/text/attention\?.*layer=2"))
    page.wait_for_function("() => document.querySelector('#heatmap .xtick') !== null")
    assert page.input_value("#layer") == "2"


def test_vit_map_opens_a_layer_with_the_keyboard(page, live_server):
    m = api(live_server, "/api/models").json()["vision"][0]
    page.goto("/vision/architecture")
    wait_map(page, "block", m["n_layers"])
    assert page.locator(".arch-node[data-kind='block']").count() == m["n_layers"]
    assert every_head_is_reachable(page)
    page.focus(".arch-node[data-name='vit.layers.2.attention'] > a.arch-head")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/vision/attention\?.*layer=2"))
    page.wait_for_function(f"() => document.getElementById('layer').options.length === {m['n_layers']}")
    assert page.input_value("#layer") == "2"


def test_sd_map_marks_where_the_prompt_enters(page, live_server):
    sd = api(live_server, "/api/models").json()["diffusion"][0]
    cross = sd["cross_attention_layers"]
    page.goto("/diffusion/architecture")
    wait_map(page, "cross_attention", len(cross))
    names = page.eval_on_selector_all(".arch-node[data-kind='cross_attention']", "els => els.map((e) => e.dataset.name)")
    assert sorted(names) == sorted(f"unet.{c}" for c in cross)
    assert page.locator(".arch-node[data-kind='cross_attention'] .arch-kv").count() == len(cross)
    hrefs = page.eval_on_selector_all(".arch-node[data-kind='cross_attention'] > a.arch-head", "els => els.map((a) => a.href)")
    assert len(hrefs) == len(cross) and all("/diffusion/generate?" in h for h in hrefs)
    assert every_head_is_reachable(page)

    # Choosing the text encoder draws the prompt's path into every cross-attention layer.
    page.focus(".arch-node[data-id='text_encoder'] > a.arch-head")
    page.wait_for_function(f"() => document.querySelectorAll('path.edge-context.on').length === {len(cross)}")
    assert page.evaluate("() => getComputedStyle(document.querySelector('path.edge-context.on')).display") != "none"
    assert page.locator("path.edge-skip").count() > 0 and page.locator("path.edge-loop").count() == 1
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "architecture-diffusion.png"), full_page=True)
