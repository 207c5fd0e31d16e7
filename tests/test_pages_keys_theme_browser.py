"""The classroom keys and the projector theme, in Chromium against the real server, with the
fixtures of test_pages_browser.py (every test fails on a console error, a page error, a failed
request, an unprovoked 4xx/5xx or a dialog). Keys: a page of each family is stepped from the keyboard
and its controls and its address must follow; keys typed in a field must not step; ? lists the
keys and Esc closes the list. Theme: the projector switch makes the page's type and the figures'
type larger, survives a reload, and dark changes the ground."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlencode, urlparse

import pytest
from playwright import sync_api

from test_pages_browser import ARGS, ARTIFACTS, CHROMIUM, SENTENCE, TIMEOUT_MS, Watch, api, browser, page  # noqa: F401 (fixtures)

pytestmark = pytest.mark.browser
expect = sync_api.expect


@pytest.fixture(autouse=True)
def patient_expect():
    """expect() waits as long as the pages' own waits (a 2-core machine under load), then as before."""
    expect.set_options(timeout=TIMEOUT_MS)
    yield
    expect.set_options(timeout=5_000)


def query(page) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(urlparse(page.url).query).items()}


def wait_query(page, **want) -> None:
    """Wait until the address holds every key=value of `want`."""
    page.wait_for_url(lambda u: all(parse_qs(urlparse(u).query).get(k, [None])[-1] == str(v) for k, v in want.items()))


def focus_page(page) -> None:
    """Put the focus on the page itself (no field), as a click on the text would."""
    page.evaluate("() => { document.activeElement && document.activeElement.blur(); }")


def press(page, key: str) -> None:
    page.keyboard.press(key)


def heatmap_title(page, div: str = "heatmap") -> str:
    return page.evaluate(f"() => (document.getElementById('{div}').layout.title || {{}}).text || ''")


def test_text_attention_keys_step_layers_and_heads(page):
    page.goto("/text/attention?" + urlencode({"text": SENTENCE}))
    page.wait_for_function("() => document.querySelector('#heatmap .xtick') !== null")
    focus_page(page)
    press(page, "ArrowRight")
    wait_query(page, layer=1, head=0)
    assert page.input_value("#layer") == "1"
    page.wait_for_function("() => document.getElementById('heatmap').layout.title.text === 'Layer 1, head 0'")
    press(page, "ArrowDown")
    press(page, "ArrowDown")
    wait_query(page, layer=1, head=2)
    assert page.input_value("#head") == "2"
    page.wait_for_function("() => document.getElementById('heatmap').layout.title.text === 'Layer 1, head 2'")
    press(page, "ArrowUp")
    press(page, "ArrowLeft")
    press(page, "ArrowLeft")  # already at layer 0: stays there
    wait_query(page, layer=0, head=1)
    assert (page.input_value("#layer"), page.input_value("#head")) == ("0", "1")

    # keys typed in the text field move the cursor, not the view
    url = page.url
    page.focus("#text")
    for key in ("ArrowRight", "ArrowLeft", "ArrowDown", "ArrowUp", "?"):
        press(page, key)
    page.wait_for_timeout(400)
    assert page.url == url and page.input_value("#layer") == "0" and page.input_value("#head") == "1"
    assert page.locator("dialog.keys-help").count() == 0
    assert sorted(page.input_value("#text")) == sorted(SENTENCE + "?")  # the ? went into the text, as typed

    # token chips are buttons: reachable by Tab, chosen with Enter, with a visible focus ring
    chip = page.locator("#tokens .token").nth(3)
    chip.focus()
    press(page, "Enter")
    wait_query(page, q=3)
    expect(page.locator("#tokens .token.selected")).to_have_attribute("data-pos", "3")
    page.focus("#text")
    press(page, "Tab")  # from the text to the Run button (the one-model select is hidden)
    assert page.evaluate("() => document.activeElement.id") == "run"
    ring = page.evaluate("() => { const s = getComputedStyle(document.activeElement); return [s.outlineStyle, parseFloat(s.outlineWidth)]; }")
    assert ring[0] != "none" and ring[1] >= 3


def test_help_lists_the_page_keys_traps_focus_and_closes_with_escape(page):
    page.goto("/text/attention?" + urlencode({"text": SENTENCE}))
    page.wait_for_function("() => document.querySelector('#heatmap .xtick') !== null")
    focus_page(page)
    press(page, "?")
    dialog = page.locator("dialog.keys-help")
    expect(dialog).to_be_visible()
    rows = dialog.locator("table.keys tr").all_inner_texts()
    listed = {r.split("\t")[0].strip(): r.split("\t")[-1].strip() for r in rows}
    assert listed["←"] == "previous layer" and listed["→"] == "next layer"
    assert listed["↑"] == "previous head" and listed["↓"] == "next head"
    assert "?" in listed and "Esc" in listed
    assert page.evaluate("() => document.querySelector('dialog.keys-help').matches(':modal')")
    # focus starts inside and stays inside, both ways round
    for key in ("Tab", "Tab", "Shift+Tab", "Shift+Tab"):
        press(page, key)
        assert page.evaluate("() => !!document.activeElement.closest('dialog.keys-help')"), key
    # the arrows do nothing to the page behind it
    press(page, "ArrowRight")
    press(page, "Escape")
    expect(dialog).to_have_count(0)
    assert page.input_value("#layer") == "0"

    # opened from the header's button, closed with its Close button: the focus goes back to the button
    page.click("#keys-help-button")
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="Close").click()
    expect(dialog).to_have_count(0)
    assert page.evaluate("() => document.activeElement.id") == "keys-help-button"
    page.focus("#keys-help-button")
    press(page, "Enter")
    expect(dialog).to_be_visible()
    press(page, "Escape")
    expect(dialog).to_have_count(0)
    assert page.evaluate("() => document.activeElement.id") == "keys-help-button"

    # a page with nothing to step still lists the keys every page has
    page.goto("/text/lens?" + urlencode({"text": SENTENCE}))
    page.wait_for_function("() => document.querySelectorAll('#lens-table tbody tr').length > 0")
    focus_page(page)
    press(page, "?")
    expect(dialog).to_be_visible()
    keys = [r.split("\t")[0].strip() for r in dialog.locator("table.keys tr").all_inner_texts()]
    assert keys == ["Tab Shift+Tab", "Enter Space", "?", "Esc"]
    press(page, "Escape")
    expect(dialog).to_have_count(0)


def test_head_walkthrough_keys_step_and_switch_heads(page):
    page.goto("/text/head?" + urlencode({"text": SENTENCE}))
    label = page.locator("#step-label")
    expect(label).to_have_text(re.compile(r"^Step 1 of 11"), timeout=TIMEOUT_MS)
    focus_page(page)
    press(page, "ArrowLeft")  # already at the first step
    press(page, "ArrowRight")
    press(page, "ArrowRight")
    expect(label).to_have_text(re.compile(r"^Step 3 of 11: Q = X·Wq"))
    wait_query(page, step=3)
    press(page, "ArrowDown")
    wait_query(page, head=1, step=3)
    assert page.input_value("#head") == "1"
    expect(page.locator("#step-text")).to_contain_text("Q = X·Wq")
    press(page, "ArrowLeft")
    expect(label).to_have_text(re.compile(r"^Step 2 of 11"))
    wait_query(page, step=2)
    focus_page(page)
    press(page, "?")
    expect(page.locator("dialog.keys-help")).to_contain_text("next step")
    press(page, "Escape")


def test_next_token_keys_generate_and_take_back(page):
    page.goto("/text/next?" + urlencode({"text": SENTENCE}))
    page.wait_for_function("() => document.querySelectorAll('#candidates .add-token').length === 10")
    n0 = page.locator("#tokens .token").count()
    focus_page(page)
    press(page, "ArrowRight")
    page.wait_for_function("(n) => document.querySelectorAll('#tokens .token').length > n", arg=n0)
    longer = page.input_value("#text")
    assert longer.startswith(SENTENCE) and len(longer) > len(SENTENCE)
    wait_query(page, text=longer)
    n1 = page.locator("#tokens .token").count()
    last = page.locator("#tokens .token .txt").last.inner_text()
    focus_page(page)
    press(page, "ArrowLeft")
    page.wait_for_function("(n) => document.querySelectorAll('#tokens .token').length === n - 1", arg=n1)
    assert page.input_value("#text") == longer[: len(longer) - len(last)]
    wait_query(page, text=page.input_value("#text"))
    press(page, "ArrowDown")
    wait_query(page, head=1)
    page.wait_for_function("() => document.getElementById('heatmap').layout.title.text === 'Layer 0, head 1'")


def test_heads_grid_keys_mark_a_head_and_enter_opens_it(page, live_server):
    m = api(live_server, "/api/models").json()["text"][0]
    page.goto("/text/heads?" + urlencode({"text": SENTENCE}))
    page.wait_for_function("(n) => (document.getElementById('grid').data || []).length === n", arg=m["n_layers"] * m["n_heads"])
    focus_page(page)
    for key in ("ArrowRight", "ArrowRight", "ArrowDown"):
        press(page, key)
    wait_query(page, layer=2, head=1)
    expect(page.locator("#open-head")).to_have_text("Open layer 2, head 1 →")
    ref = page.evaluate("() => document.getElementById('grid').layout.shapes[0].xref")
    assert ref == f"x{2 * m['n_heads'] + 1 + 1} domain"  # the marked subplot
    focus_page(page)
    press(page, "Enter")
    page.wait_for_url(re.compile(r"/text/attention\?.*layer=2&head=1"))
    page.wait_for_function("() => document.querySelector('#heatmap .xtick') !== null")
    assert (page.input_value("#layer"), page.input_value("#head")) == ("2", "1")


def test_vision_keys(page):
    page.goto("/vision/attention?image=scene-1")
    page.wait_for_function("() => { const d = document.getElementById('image').data; return d && d[0] && d[0].showscale; }")
    z0 = page.evaluate("() => document.getElementById('image').data[0].z")
    focus_page(page)
    press(page, "ArrowRight")
    wait_query(page, layer=1)
    press(page, "ArrowDown")  # from "mean of heads" to head 0
    wait_query(page, layer=1, head=0)
    assert (page.input_value("#layer"), page.input_value("#head")) == ("1", "0")
    page.wait_for_function("(z0) => JSON.stringify(document.getElementById('image').data[0].z) !== JSON.stringify(z0)", arg=z0)
    expect(page.locator("#overlay-caption")).to_contain_text("layer 1, head 0")
    # the picker's select keeps its own arrows
    page.focus("#gallery")
    press(page, "ArrowLeft")
    page.wait_for_timeout(300)
    assert query(page)["layer"] == "1"

    page.goto("/vision/patches?image=scene-1&patch=9")
    page.wait_for_function("() => (document.getElementById('embedding').data || []).length === 1")
    focus_page(page)
    press(page, "ArrowRight")
    wait_query(page, patch=10)
    press(page, "ArrowDown")
    wait_query(page, patch=18)  # 8 patches a row
    expect(page.locator("#patch-caption")).to_contain_text("patch 18 (row 2, col 2)")
    assert page.input_value("#patch") == "18"

    page.goto("/vision/rollout?image=scene-3")
    page.wait_for_function("() => { const d = document.getElementById('image').data; return d && d[0] && d[0].showscale; }")
    assert page.input_value("#step") == "3"
    focus_page(page)
    press(page, "ArrowLeft")
    press(page, "ArrowLeft")
    wait_query(page, step=1)
    assert page.input_value("#step") == "1"
    expect(page.locator("#rollout-caption")).to_contain_text("after layer 1")

    page.goto("/vision/heads?image=scene-2")
    page.wait_for_function("() => (document.getElementById('distance').data || []).length === 4")
    focus_page(page)
    for key in ("ArrowRight", "ArrowDown", "ArrowDown"):
        press(page, key)
    wait_query(page, layer=1, head=2)
    expect(page.locator("#open-head")).to_contain_text("layer 1, head 2")
    focus_page(page)
    press(page, "Enter")
    page.wait_for_url(re.compile(r"/vision/attention\?.*layer=1&head=2"))


def test_diffusion_keys(page):
    page.goto("/diffusion/forward?t=500")
    page.wait_for_function("() => document.getElementById('formula').textContent.startsWith('t = 500')")
    focus_page(page)
    press(page, "ArrowRight")
    wait_query(page, t=550)
    assert page.input_value("#t") == "550"
    page.wait_for_function("() => document.getElementById('formula').textContent.startsWith('t = 550')")
    press(page, "ArrowDown")
    wait_query(page, scene=1)
    assert page.input_value("#scene") == "1"
    # arrows in a number field change the field, never the timestep
    page.focus("#noise-seed")
    press(page, "ArrowRight")
    press(page, "ArrowLeft")
    page.wait_for_timeout(300)
    assert query(page)["t"] == "550" and page.input_value("#t") == "550"

    page.goto("/diffusion/generate?" + urlencode({"prompt": "a red circle", "steps": 3, "seed": 2}))
    page.wait_for_function("() => document.getElementById('progress-text').textContent.startsWith('Done')")
    page.wait_for_function("() => (document.getElementById('paths').data || []).length === 1")
    out = page.locator("#step-out")
    expect(out).to_have_text(re.compile(r"^3 of 3"))
    focus_page(page)
    press(page, "ArrowLeft")
    expect(out).to_have_text(re.compile(r"^2 of 3"))
    wait_query(page, step=1)
    press(page, "ArrowDown")
    wait_query(page, word=0)
    page.wait_for_function("() => document.getElementById('x0').dataset.word === 'start'")
    expect(page.locator("#words .token[data-pos='0']")).to_have_attribute("aria-pressed", "true")
    press(page, "ArrowUp")
    page.wait_for_function("() => document.getElementById('x0').dataset.word === ''")
    press(page, "Space")  # plays from here to the end
    expect(page.locator("#play")).to_have_attribute("aria-pressed", "true")
    expect(out).to_have_text(re.compile(r"^3 of 3"))
    expect(page.locator("#play")).to_have_attribute("aria-pressed", "false")
    # typing a space in the prompt types it
    page.focus("#prompt")
    press(page, "End")
    press(page, "Space")
    assert page.input_value("#prompt") == "a red circle "
    expect(page.locator("#play")).to_have_attribute("aria-pressed", "false")


# ---------------------------------------------------------------------------------------------
# Theme

FONT_SIZES = """() => {
    const px = (el) => el ? parseFloat(getComputedStyle(el).fontSize) : null;
    return {
        page: px(document.body),
        title: px(document.querySelector('#heatmap .gtitle')),
        tick: px(document.querySelector('#heatmap .xtick text')),
    };
}"""


def sizes(page) -> dict:
    return page.evaluate(FONT_SIZES)


def background(page) -> str:
    return page.evaluate("() => getComputedStyle(document.body).backgroundColor")


def test_projector_theme_grows_type_survives_reload_and_dark_changes_the_ground(page):
    page.goto("/text/attention?" + urlencode({"text": SENTENCE}))
    page.wait_for_function("() => document.querySelector('#heatmap .gtitle') && document.querySelector('#heatmap .xtick')")
    before = sizes(page)
    light = background(page)
    assert page.evaluate("() => document.documentElement.className").split() == ["theme-light"]
    title_fill = page.evaluate("() => getComputedStyle(document.querySelector('#heatmap .gtitle')).fill")

    page.click("#theme-projector")
    expect(page.locator("#theme-projector")).to_have_attribute("aria-pressed", "true")
    wait_query(page, theme="projector")
    page.wait_for_function("(t) => parseFloat(getComputedStyle(document.querySelector('#heatmap .gtitle')).fontSize) > t", arg=before["title"])
    after = sizes(page)
    assert after["page"] >= before["page"] * 1.3
    assert after["title"] >= before["title"] * 1.4 and after["tick"] >= before["tick"] * 1.4
    grid = page.evaluate("() => document.getElementById('row-chart')._fullLayout.xaxis.gridwidth")
    assert grid >= 2  # thick lines

    # a key writes the view into the address and keeps the theme there
    focus_page(page)
    press(page, "ArrowRight")
    wait_query(page, layer=1, theme="projector")

    page.reload()
    page.wait_for_function("() => document.querySelector('#heatmap .gtitle') && document.querySelector('#heatmap .xtick')")
    assert "theme-projector" in page.evaluate("() => document.documentElement.className")
    reloaded = sizes(page)
    assert reloaded["page"] == after["page"] and reloaded["title"] == after["title"] and reloaded["tick"] == after["tick"]
    expect(page.locator("#theme-projector")).to_have_attribute("aria-pressed", "true")
    assert page.input_value("#layer") == "1"

    page.select_option("#theme-colours", "dark")
    wait_query(page, theme="projector-dark")
    assert background(page) != light
    page.wait_for_function("(f) => getComputedStyle(document.querySelector('#heatmap .gtitle')).fill !== f", arg=title_fill)
    assert sizes(page)["title"] == after["title"]  # dark keeps the projector's type
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "attention_projector_dark.png"), full_page=True)

    # this browser remembers the choice: a page opened without ?theme= shows it too
    page.goto("/text/lens?" + urlencode({"text": SENTENCE}))
    page.wait_for_function("() => document.querySelectorAll('#lens-table tbody tr').length > 0")
    assert set(page.evaluate("() => document.documentElement.className").split()) == {"theme-projector", "theme-dark"}
    assert page.input_value("#theme-colours") == "dark"
    # a link to another page carries the theme in its address
    page.click("nav a[href='/text/heads']")
    page.wait_for_url(re.compile(r"/text/heads\?.*theme=projector-dark"))
    # back to the default: the address loses the parameter
    page.click("#theme-projector")
    page.select_option("#theme-colours", "auto")
    page.wait_for_url(lambda u: "theme=" not in u)
    assert page.evaluate("() => localStorage.getItem('glassbox.theme')") == "auto"


def test_a_figure_is_redrawn_in_the_new_theme(page):
    """Every Plotly figure of a page follows a switch, with no reload (here the ViT page's three)."""
    page.goto("/vision/patches?image=scene-1&patch=9")
    page.wait_for_function("() => (document.getElementById('embedding').data || []).length === 1")
    tick = "() => parseFloat(getComputedStyle(document.querySelector('#embedding .ytick text')).fontSize)"
    small = page.evaluate(tick)
    page.click("#theme-projector")
    page.wait_for_function(f"(s) => ({tick})() >= s * 1.4", arg=small)
    assert page.evaluate("() => document.getElementById('embedding').data[0].colorscale[0][1]") == "#053061"  # DIVERGING


def test_dark_follows_the_system_until_a_choice_is_made(browser, live_server):
    context = browser.new_context(base_url=live_server, color_scheme="dark")
    context.set_default_timeout(TIMEOUT_MS)
    pg = context.new_page()
    watch = Watch()
    pg.on("console", watch.console)
    pg.on("pageerror", lambda e: watch.problems.append(f"page error: {e}"))
    try:
        pg.goto("/")
        assert pg.evaluate("() => document.documentElement.className") == "theme-dark"
        dark = pg.evaluate("() => getComputedStyle(document.body).backgroundColor")
        pg.select_option("#theme-colours", "light")
        pg.wait_for_url(re.compile(r"theme=light"))
        assert pg.evaluate("() => document.documentElement.className") == "theme-light"
        assert pg.evaluate("() => getComputedStyle(document.body).backgroundColor") != dark
        pg.goto("/")  # no parameter: the remembered choice, not the system's
        assert pg.evaluate("() => document.documentElement.className") == "theme-light"
    finally:
        context.close()
    assert not watch.problems, "\n".join(watch.problems)
