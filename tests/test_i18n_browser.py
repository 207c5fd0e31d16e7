"""Languages in Chromium against the real server, with the fixtures of test_pages_browser.py (every
test fails on a console error, a page error, a failed request, an unprovoked 4xx/5xx or a dialog).

A GPT-2, a ViT and a diffusion page opened with lang=es show the Spanish interface (the nav, the
headings, the buttons, and what their scripts write); the switch moves to English and keeps the rest
of the address; the language survives the page rewriting its address, a link to another page and a
lesson's Next; Accept-Language: es picks Spanish when the address has no lang."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlencode, urlparse

import pytest
from playwright import sync_api

from app import i18n
from app.architecture import template
from test_pages_browser import SENTENCE, TIMEOUT_MS, Watch, browser, page  # noqa: F401 (fixtures)

pytestmark = pytest.mark.browser
expect = sync_api.expect
es = i18n.gettext_for("es")

# The visible texts of the page once its script has drawn it: text nodes (HTML and SVG: Plotly's titles,
# legends and annotations) and title, aria-label, placeholder and alt attributes, leaving out data:
# translate="no", code, key names, form fields, Plotly's tick labels (tokens, numbers) and the PNG/SVG icons.
VISIBLE_TEXTS = """() => {
  const data = '[translate="no"], code, kbd, sub, textarea, script, style, select, .xtick, .ytick, .cbaxis, .export-icon';
  const out = new Set();
  const add = (s) => { s = (s || "").replace(/\\s+/g, " ").trim(); if (/[A-Za-z]{2}/.test(s)) out.add(s); };
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const el = n.parentElement;
    if (!el || el.closest(data) || el.closest("[hidden]")) continue;
    add(n.textContent);
  }
  for (const el of document.body.querySelectorAll("[title], [aria-label], [placeholder], [alt]")) {
    if (el.closest(data) || el.closest("[hidden]")) continue;
    for (const a of ["title", "aria-label", "placeholder", "alt"]) if (el.hasAttribute(a)) add(el.getAttribute(a));
  }
  return [...out];
}"""


def untranslated(page, url: str, ready: str) -> list[str]:
    """The texts `url` shows the same in English and in Spanish once `ready` holds, that are not
    msgids their translator kept as they are: interface strings that missed the catalogue or t()."""
    texts = {}
    for lang in ("en", "es"):
        page.goto(f"{url}&lang={lang}")
        page.wait_for_function(ready)
        page.wait_for_timeout(300)  # a figure's last redraw
        texts[lang] = set(page.evaluate(VISIBLE_TEXTS))
    kept = {m.id for m in i18n.read_catalog("es") if m.id and m.string == m.id}
    # a kept msgid with its numbers filled in ("LayerNorm {0}" shown as "LayerNorm 1") is kept too
    return sorted(t for t in texts["en"] & texts["es"] if t not in kept and template(t) not in kept and t != "glassbox")


@pytest.fixture(autouse=True)
def patient_expect():
    expect.set_options(timeout=TIMEOUT_MS)
    yield
    expect.set_options(timeout=5_000)


def query(url: str) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(urlparse(url).query).items()}


def nav_texts(page) -> list[str]:
    return page.locator("nav[aria-label] >> nth=0").locator("a").all_inner_texts()


def expect_spanish_frame(page) -> None:
    """The parts every page shares: <html lang>, the nav, the header's buttons, the switch."""
    expect(page.locator("html")).to_have_attribute("lang", "es")
    nav = nav_texts(page)
    assert es("Lessons") in nav and es("Attention") in nav and es("Text to image") in nav, nav
    expect(page.locator(".room-join")).to_have_text(es("Join a room"))
    expect(page.locator("#present")).to_have_text(es("Present"))
    expect(page.locator(".lang-switch a[aria-current='true']")).to_have_text("Español")


def test_gpt2_page_in_spanish_and_the_switch_keeps_the_address(page):
    page.goto("/text/attention?" + urlencode({"text": SENTENCE, "layer": 1, "lang": "es"}))
    expect_spanish_frame(page)
    expect(page.locator("h1")).to_have_text(es("Attention heatmap"))
    expect(page.locator("#run")).to_have_text(es("Run"))
    expect(page.locator("label[for=layer] span")).to_have_text(es("Layer"))
    page.wait_for_function("() => document.querySelector('#heatmap .xtick') !== null")
    caption = es("Attention of “{token}” (row {q}): it looks most at “{best}” ({p}). The bars sum to 1.")
    expect(page.locator("#row-caption")).to_contain_text(caption.split("{token}")[0])  # the script writes Spanish too

    # The page rewrites its own address (writeState): the language stays in it.
    page.select_option("#head", "2")
    page.wait_for_url(lambda u: query(u).get("head") == "2")
    assert query(page.url)["lang"] == "es"

    # The switch: English, with everything else of the address as it is now.
    before = query(page.url)
    page.click(".lang-switch a[hreflang=en]")
    page.wait_for_url(lambda u: query(u).get("lang") == "en")
    after = query(page.url)
    assert {k: v for k, v in after.items() if k != "lang"} == {k: v for k, v in before.items() if k != "lang"}
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.locator("h1")).to_have_text("Attention heatmap")
    expect(page.locator("#run")).to_have_text("Run")
    assert page.input_value("#head") == "2" and page.input_value("#layer") == "1"

    # ... and back to Spanish; a link to another page takes the language along.
    page.click(".lang-switch a[hreflang=es]")
    page.wait_for_url(lambda u: query(u).get("lang") == "es")
    page.click(f"nav a:text-is('{es('All heads')}')")
    page.wait_for_url(re.compile(r"/text/heads\?"))
    assert query(page.url)["lang"] == "es"
    expect(page.locator("h1")).to_have_text(es("All heads"))


def test_gpt2_page_scripts_write_spanish(page):
    url = "/text/attention?" + urlencode({"text": SENTENCE, "q": 4})
    left = untranslated(page, url, "() => document.querySelector('#heatmap .xtitle') && document.getElementById('row-chart').data")
    assert left == [], "\n".join(left)
    assert page.evaluate("() => document.getElementById('heatmap').layout.title.text") == es("Layer {layer}, head {head}").format(layer=0, head=0)
    assert page.evaluate("() => document.getElementById('heatmap').layout.xaxis.title.text") == es("key: the token looked at")
    page.click("#keys-help-button")
    expect(page.locator("dialog.keys-help h2")).to_have_text(es("Keys on this page"))
    expect(page.locator("dialog.keys-help")).to_contain_text(es("next layer"))


def test_vit_page_in_spanish(page):
    page.goto("/vision/patches?" + urlencode({"image": "scene-1", "lang": "es"}))
    expect_spanish_frame(page)
    expect(page.locator("h1")).to_have_text(es("Patches and embeddings"))
    expect(page.locator("label[for=gallery] span")).to_have_text(es("Gallery"))
    expect(page.locator("label[for=patch] span")).to_have_text(es("Patch"))
    # a sample photo's caption is interface (a scene's is the model's input text, kept)
    photo = es("scikit-image sample photo “{name}”").split("{name}")[0]
    expect(page.locator("#gallery option", has_text=photo).first).to_be_attached()
    info = es("({format} {width} × {height}, read by {model} at {w} × {h} px, {rows} × {cols} patches of {patch} px)")
    expect(page.locator("#picture-info")).to_contain_text(info.split("{height}")[1].split("{model}")[0])
    url = "/vision/patches?" + urlencode({"image": "scene-1", "patch": 9})
    assert untranslated(page, url, "() => document.getElementById('embedding').data && document.getElementById('patch-caption').textContent.includes('×')") == []
    assert page.evaluate("() => document.getElementById('embedding').layout.xaxis.title.text").startswith(es("dimension"))


def test_diffusion_page_in_spanish(page):
    page.goto("/diffusion/generate?lang=es")
    expect_spanish_frame(page)
    expect(page.locator("h1")).to_have_text(es("Text to image, step by step"))
    expect(page.locator("#run")).to_have_text(es("Run"))
    expect(page.locator("label[for=seed] span")).to_have_text(es("Seed"))
    url = "/diffusion/generate?" + urlencode({"prompt": "a red circle", "steps": 3, "seed": 1})
    assert untranslated(page, url, "() => document.getElementById('paths').data && document.getElementById('progress-text').textContent") == []
    expect(page.locator("#play")).to_have_text(es("▶ Play"))
    expect(page.locator("#progress-text")).to_have_text(es("Done: {n} steps.").format(n=3))
    expect(page.locator("#x0-caption")).to_contain_text(es("VAE decode"))
    expect(page.locator("h2#compare-h")).to_have_text(es("Compare two runs"))


def test_accept_language_picks_spanish_without_lang(browser, live_server):  # noqa: F811
    context = browser.new_context(locale="es-ES", base_url=live_server)
    context.set_default_timeout(TIMEOUT_MS)
    watch = Watch()
    pg = context.new_page()
    pg.on("console", watch.console)
    pg.on("pageerror", lambda e: watch.problems.append(f"page error: {e}"))
    pg.on("response", watch.response)
    try:
        pg.goto("/text/attention?" + urlencode({"text": SENTENCE}))
        expect_spanish_frame(pg)
        assert "lang" not in query(pg.url)
        expect(pg.locator("h1")).to_have_text(es("Attention heatmap"))
        pg.goto("/text/attention?" + urlencode({"text": SENTENCE, "lang": "en"}))  # the address still wins
        expect(pg.locator("h1")).to_have_text("Attention heatmap")
    finally:
        context.close()
    assert not watch.problems, "\n".join(watch.problems)


def test_lesson_in_spanish_keeps_the_language_step_to_step(page):
    page.goto("/lessons?lang=es")
    expect(page.locator("h1")).to_have_text(es("Guided lessons"))
    page.locator("form[action='/lessons/gpt2-attention'] button[type=submit]").click()
    page.wait_for_url(re.compile(r"/text/attention\?"))
    assert query(page.url)["lang"] == "es"
    expect(page.locator("#lesson-title")).to_have_text(es("How GPT-2 pays attention"))
    expect(page.locator("#lesson-step-title")).to_have_text(es("Attention is a soft lookup"))
    page.click("#lesson-next")
    page.wait_for_url(lambda u: query(u).get("lstep") == "2")
    assert query(page.url)["lang"] == "es"
    expect(page.locator("#lesson-step-title")).to_have_text(es("The query"))


@pytest.mark.parametrize("path", ["/text/architecture", "/diffusion/architecture"])
def test_architecture_map_in_spanish(page, path):
    """The map's blocks and facts come from the API in the page's language: nothing on the drawn map
    stays English except what the catalogue keeps as it is (module names such as conv_in, d_model)."""
    ready = "() => document.querySelectorAll('.arch-node').length > 5"
    assert untranslated(page, f"{path}?node=", ready) == []
    page.goto(f"{path}?lang=es")
    page.wait_for_function(ready)
    label = es("Block {0}").format(0) if path.startswith("/text") else es("UNet (predicts the noise)")
    expect(page.locator(".arch-node").filter(has_text=label).first).to_be_visible()
