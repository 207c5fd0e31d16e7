"""The pages, driven in Chromium (Playwright, sync API) against the real server (`live_server`,
tests/conftest.py). Every test fails on a console error, an uncaught page error, a failed request,
a response >= 400 it did not provoke on purpose, or any dialog (an XSS would open one).

Screenshots go to test-artifacts/ (and docs/screenshot.png, the README's picture, when it is missing)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest

from playwright import sync_api  # a test dependency: missing it is an error, not a skip

from app.settings import ROOT

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
SENTENCE = "The animal didn't cross the street because it was too tired"
XSS = "<img src=x onerror=alert(1)>"
ARTIFACTS = ROOT / "test-artifacts"
TIMEOUT_MS = 60_000  # a 2-core machine under load: be patient


def show_token(text: str) -> str:
    """Python twin of showToken() in static/js/common.js."""
    t = text.replace("\n", "↵").replace("\t", "⇥")
    return (t.replace(" ", "␣") or "∅") if t.strip() == "" else t.strip()


def labels(tokens: list[dict]) -> list[str]:
    return [f"{i}·{show_token(t['text'])}" for i, t in enumerate(tokens)]


def api(base: str, path: str, body: dict | None = None) -> httpx.Response:
    if body is None:
        return httpx.get(base + path, timeout=60)
    return httpx.post(base + path, json=body, timeout=60)


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):  # CI must run the browser tests, never skip them
            pytest.fail(f"{CHROMIUM} is not installed: ./run.sh test installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} is not installed (./run.sh test installs it)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


class Watch:
    """What went wrong in the page; `allow(status)` tolerates a status a test provokes on purpose."""

    def __init__(self):
        self.problems: list[str] = []
        self.allowed: set[int] = set()

    def allow(self, status: int) -> None:
        self.allowed.add(status)

    def console(self, msg) -> None:
        if msg.type != "error":
            return
        m = re.search(r"status of (\d{3})", msg.text)
        if m and int(m.group(1)) in self.allowed:
            return
        self.problems.append(f"console error: {msg.text}")

    def response(self, res) -> None:
        if res.status >= 400 and res.status not in self.allowed:
            self.problems.append(f"HTTP {res.status} for {res.url}")


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, base_url=live_server)
    context.set_default_timeout(TIMEOUT_MS)
    pg = context.new_page()
    watch = Watch()
    pg.on("console", watch.console)
    pg.on("pageerror", lambda e: watch.problems.append(f"page error: {e}"))
    # A reload cancels what the old page was still loading (net::ERR_ABORTED): not a failure.
    pg.on(
        "requestfailed",
        lambda r: None if "ERR_ABORTED" in (r.failure or "") else watch.problems.append(f"request failed: {r.url} {r.failure}"),
    )
    pg.on("response", watch.response)

    def dialog(d):
        watch.problems.append(f"dialog opened ({d.type}): {d.message}")
        d.dismiss()

    pg.on("dialog", dialog)
    pg.watch = watch
    yield pg
    context.close()
    assert not watch.problems, "\n".join(watch.problems)


def run_text(page, text: str, selector: str = "#text") -> None:
    page.fill(selector, text)
    page.press(selector, "Enter")


def wait_heatmap_labels(page, expected: list[str], div: str = "heatmap") -> list[str]:
    page.wait_for_function(
        """([div, expected]) => {
            const ticks = [...document.querySelectorAll(`#${div} .xaxislayer-above .xtick text`)].map((e) => e.textContent);
            return ticks.length === expected.length && ticks.every((t, i) => t === expected[i]);
        }""",
        arg=[div, expected],
    )
    return page.evaluate(
        "(div) => [...document.querySelectorAll(`#${div} .xaxislayer-above .xtick text`)].map((e) => e.textContent)", div
    )


def z_of(page, div: str = "heatmap"):
    return page.evaluate(f"() => document.getElementById('{div}').data[0].z")


def click_cell(page, div: str, row: int, col: int) -> None:
    """Click the centre of heatmap cell (row, col) of the Plotly figure in #div."""
    x, y = page.evaluate(
        """([div, row, col]) => {
            const gd = document.getElementById(div);
            const r = gd.getBoundingClientRect();
            const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
            const y = r.top + ya._offset + ya.l2p(row);
            if (y < 0 || y > window.innerHeight) window.scrollBy(0, y - window.innerHeight / 2);
            const r2 = gd.getBoundingClientRect();
            return [r2.left + xa._offset + xa.l2p(col), r2.top + ya._offset + ya.l2p(row)];
        }""",
        [div, row, col],
    )
    page.mouse.click(x, y)


def test_attention_page(page, live_server):
    """Type, run, see the right labels; switch head and the heatmap changes; click a cell for its row."""
    trace = api(live_server, "/api/text/trace", {"text": SENTENCE}).json()
    expected = labels(trace["tokens"])

    page.goto("/text/attention")
    run_text(page, SENTENCE)
    assert wait_heatmap_labels(page, expected) == expected
    assert page.locator("#tokens .token").count() == len(expected)
    z0 = z_of(page)
    assert len(z0) == len(expected)

    page.select_option("#head", "1")
    page.wait_for_function("(z0) => JSON.stringify(document.getElementById('heatmap').data[0].z) !== JSON.stringify(z0)", arg=z0)
    assert z_of(page) != z0
    page.wait_for_url(re.compile(r"head=1"))

    click_cell(page, "heatmap", 5, 2)
    page.wait_for_function("(l) => document.getElementById('row-caption').textContent.includes(l)", arg=expected[5])
    page.wait_for_url(re.compile(r"q=5"))
    bars = page.evaluate("() => document.getElementById('row-chart').data[0].x.length")
    assert bars == 6  # a query sees itself and the 5 tokens before it
    assert page.locator("#tokens .token.selected").inner_text().endswith("the")

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "attention.png"), full_page=True)
    if not (ROOT / "docs" / "screenshot.png").exists():  # the README's picture: made once, then kept
        (ROOT / "docs").mkdir(exist_ok=True)
        page.screenshot(path=str(ROOT / "docs" / "screenshot.png"), full_page=True)


def test_reload_restores_layer_and_head(page, live_server):
    models = api(live_server, "/api/models").json()["text"][0]
    layer, head = models["n_layers"] - 1, models["n_heads"] - 1
    page.goto("/text/attention?" + urlencode({"text": SENTENCE, "layer": layer, "head": head}))
    page.wait_for_function("() => document.querySelector('#heatmap .xtick') !== null")
    assert page.input_value("#layer") == str(layer)
    assert page.input_value("#head") == str(head)

    page.select_option("#layer", "1")
    page.wait_for_url(re.compile(r"layer=1&"))
    z = z_of(page)
    page.reload()
    page.wait_for_function("() => document.querySelector('#heatmap .xtick') !== null")
    page.wait_for_function("() => document.getElementById('heatmap').data")
    assert page.input_value("#layer") == "1"
    assert page.input_value("#head") == str(head)
    assert page.input_value("#text") == SENTENCE
    assert z_of(page) == z


def test_head_walkthrough(page):
    page.goto("/text/head?" + urlencode({"text": SENTENCE}))
    label = page.locator("#step-label")
    sync_api.expect(label).to_have_text(re.compile(r"^Step 1 of 11: X"), timeout=TIMEOUT_MS)
    seen = [label.inner_text()]
    for n in range(2, 12):
        page.click("#next-step")
        sync_api.expect(label).to_have_text(re.compile(rf"^Step {n} of 11: "))
        seen.append(label.inner_text())
        assert page.locator("#step-text").inner_text().strip()
        assert page.locator("#step-plots .plot .main-svg").count() >= 1
        if n == 8:  # the causal mask: -inf above the diagonal is blank (null)
            z = page.evaluate("() => document.querySelector('#step-plots .plot').data[0].z")
            assert z[0][1] is None and z[1][0] is not None
    assert seen[2] == "Step 3 of 11: Q = X·Wq"
    assert seen[-1].startswith("Step 11 of 11: Concat")
    assert page.locator("#next-step").is_disabled()
    page.wait_for_url(re.compile(r"step=11"))
    page.click("#prev-step")
    sync_api.expect(label).to_have_text(re.compile(r"^Step 10 of 11"))
    page.screenshot(path=str(ARTIFACTS / "head.png"), full_page=True)


def count_tokens(page) -> int:
    return page.locator("#tokens .token").count()


def test_next_token_add_and_generate(page):
    page.goto("/text/next?" + urlencode({"text": SENTENCE}))
    page.wait_for_function("() => document.querySelectorAll('#candidates .add-token').length === 10")
    page.wait_for_function("() => document.querySelector('#heatmap .xtick') !== null")
    n0 = count_tokens(page)
    assert n0 > 0

    page.locator("#temperature").fill("0.5")
    page.wait_for_function(
        "() => document.getElementById('next-chart').layout.xaxis.title.text.includes('0.5')"
    )
    page.wait_for_url(re.compile(r"temperature=0\.5"))

    first = page.locator("#candidates .cand").first.inner_text()
    page.locator("#candidates .add-token").first.click()
    page.wait_for_function("(n) => document.querySelectorAll('#tokens .token').length > n", arg=n0)
    n1 = count_tokens(page)
    assert page.input_value("#text").startswith(SENTENCE) and page.input_value("#text").endswith(first.strip())

    page.click("#generate")
    page.wait_for_function("(n) => document.querySelectorAll('#tokens .token').length > n", arg=n1)
    n2 = count_tokens(page)
    assert n2 >= n1 + 1
    # the attention view grew with the text
    page.wait_for_function("(n) => document.querySelectorAll('#heatmap .xaxislayer-above .xtick text').length === n", arg=n2)
    assert page.locator("#token-count").inner_text().startswith(f"{n2} token")
    page.screenshot(path=str(ARTIFACTS / "next.png"), full_page=True)


def test_heads_grid(page, live_server):
    m = api(live_server, "/api/models").json()["text"][0]
    n = m["n_layers"] * m["n_heads"]
    page.goto("/text/heads?" + urlencode({"text": SENTENCE}))
    page.wait_for_function("(n) => (document.getElementById('grid').data || []).length === n", arg=n)
    types = page.evaluate("() => document.getElementById('grid').data.map((t) => t.type)")
    assert types == ["heatmap"] * n
    page.screenshot(path=str(ARTIFACTS / "heads.png"), full_page=True)
    # click the lower-left part (below the diagonal) of the last layer's last head
    x, y = page.evaluate(
        """(n) => {
            const gd = document.getElementById('grid');
            const r = gd.getBoundingClientRect();
            const xa = gd._fullLayout['xaxis' + n], ya = gd._fullLayout['yaxis' + n];
            const y = r.top + ya._offset + ya._length * 0.85;
            window.scrollBy(0, y - window.innerHeight / 2);  // mouse clicks need the point on screen
            const r2 = gd.getBoundingClientRect();
            return [r2.left + xa._offset + xa._length * 0.15, r2.top + ya._offset + ya._length * 0.85];
        }""",
        n,
    )
    page.mouse.click(x, y)
    page.wait_for_url(re.compile(rf"/text/attention\?.*layer={m['n_layers'] - 1}&head={m['n_heads'] - 1}"))
    page.wait_for_function("() => document.querySelector('#heatmap .xtick') !== null")
    assert page.input_value("#head") == str(m["n_heads"] - 1)


def test_lens_table(page, live_server):
    m = api(live_server, "/api/models").json()["text"][0]
    page.goto("/text/lens?" + urlencode({"text": SENTENCE}))
    page.wait_for_function("() => document.querySelectorAll('#lens-table tbody tr').length > 0")
    rows = page.locator("#lens-table tbody tr")
    assert rows.count() == m["n_layers"] + 1
    n_tokens = len(api(live_server, "/api/text/trace", {"text": SENTENCE}).json()["tokens"])
    assert rows.first.locator("td").count() == n_tokens
    page.screenshot(path=str(ARTIFACTS / "lens.png"), full_page=True)


def test_compare(page):
    page.goto("/text/compare")
    page.wait_for_function("() => document.getElementById('chart-a').data && document.getElementById('chart-b').data")
    # default: follow "it" in both texts
    assert page.locator("#tokens-a .token.selected .txt").inner_text().strip() == "it"
    assert page.locator("#tokens-b .token.selected .txt").inner_text().strip() == "it"
    assert "it" in page.locator("#summary-a").inner_text()
    # follow the last token: the texts differ there
    page.locator("#tokens-a .token").last.click()
    page.wait_for_url(re.compile(r"qa=\d+"))
    sync_api.expect(page.locator("#compare-note")).to_contain_text("differ")
    page.screenshot(path=str(ARTIFACTS / "compare.png"), full_page=True)


def test_empty_text_shows_the_error(page, live_server):
    detail = api(live_server, "/api/text/trace", {"text": ""}).json()["detail"]
    page.watch.allow(422)
    page.goto("/text/attention")
    page.wait_for_function("() => document.querySelector('#heatmap .xtick') !== null")
    run_text(page, "")
    alert = page.locator("#error[role=alert]")
    sync_api.expect(alert).to_be_visible()
    sync_api.expect(alert).to_have_text(detail)
    # the page still works afterwards, and the box goes away
    run_text(page, SENTENCE)
    sync_api.expect(alert).to_be_hidden()


def test_markup_in_text_is_shown_literally(page, live_server):
    tokens = api(live_server, "/api/text/trace", {"text": XSS}).json()["tokens"]
    page.goto("/text/attention")
    page.wait_for_function("() => document.querySelector('#heatmap .xtick') !== null")
    run_text(page, XSS)
    expected = labels(tokens)
    assert wait_heatmap_labels(page, expected) == expected
    chips = page.locator("#tokens .token .txt").all_inner_texts()
    assert "".join(chips) == XSS
    assert page.evaluate("() => document.querySelectorAll('img[src=\"x\"]').length") == 0
    page.wait_for_timeout(500)  # give an injected handler time to fire; the fixture fails on a dialog
