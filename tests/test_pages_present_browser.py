"""Presenter mode in Chromium: one presenter and three followers, each in its own browser context
(its own cookies and sessionStorage, as on four laptops), against the real server. Every page
fails the test on a console error, a page error, a failed request or an unexpected HTTP error
(tests/test_pages_browser.py's Watch)."""

from __future__ import annotations

import re
import time
from contextlib import contextmanager
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
from playwright.sync_api import Error as PlaywrightError

from app.routes.pages import DIFFUSION_PAGES, TEXT_PAGES, VISION_PAGES
from tests.test_pages_browser import ARTIFACTS, SENTENCE, TIMEOUT_MS, Watch, browser, run_text, z_of  # noqa: F401 (browser: a fixture)

pytestmark = pytest.mark.browser

FOLLOW_S = 5  # "within a few seconds": a follower reloads the presenter's view (a loaded 2-core machine)
OTHER = "Once upon a time a little dog found a red ball in the garden"


@contextmanager
def open_pages(browser, base: str, n: int):
    """n pages, each in a fresh browser context, watched for errors."""
    contexts, pages = [], []
    for _ in range(n):
        context = browser.new_context(viewport={"width": 1300, "height": 900}, base_url=base)
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()
        watch = Watch()
        page.on("console", watch.console)
        page.on("pageerror", lambda e, w=watch: w.problems.append(f"page error: {e}"))
        # A follower's page is replaced mid-load now and then: its cancelled requests are not failures.
        page.on("requestfailed", lambda r, w=watch: None if "ERR_ABORTED" in (r.failure or "") else w.problems.append(f"request failed: {r.url} {r.failure}"))
        page.on("response", watch.response)
        page.on("dialog", lambda d, w=watch: (w.problems.append(f"dialog: {d.message}"), d.dismiss()))
        page.watch = watch
        contexts.append(context)
        pages.append(page)
    try:
        yield pages
    finally:
        problems = [f"page {i}: {p}" for i, page in enumerate(pages) for p in page.watch.problems]
        for context in contexts:
            context.close()
        assert not problems, "\n".join(problems)


def view(url: str) -> tuple[str, list]:
    """A page address as (path, sorted parameters), without present.js's own `room`."""
    parts = urlsplit(url)
    return parts.path, sorted((k, v) for k, v in parse_qsl(parts.query) if k != "room")


def params(page) -> dict:
    return dict(view(page.url)[1])


def wait_view(page, path: str, want: dict, timeout_s: float = FOLLOW_S) -> None:
    """Wait until the page's address is `path` with at least the parameters in `want` (the
    navigation committed: the page itself may still be loading)."""
    page.wait_for_url(
        lambda url: view(url)[0] == path and all(dict(view(url)[1]).get(k) == str(v) for k, v in want.items()),
        timeout=timeout_s * 1000, wait_until="commit",
    )


def wait_heatmap(page, z) -> None:
    """The page shows this heatmap (the presenter's numbers, drawn by the follower's own page)."""
    page.wait_for_function(
        "(z) => { const gd = document.getElementById('heatmap');"
        " return !!(gd && gd.data && gd.data[0] && JSON.stringify(gd.data[0].z) === JSON.stringify(z)); }",
        arg=z,
    )


def same_page(page, presenter) -> None:
    """What a follower's page shows is what the presenter's shows: selects, text, heatmap."""
    wait_heatmap(page, z_of(presenter))
    for sel in ("#layer", "#head", "#text"):
        assert page.input_value(sel) == presenter.input_value(sel)


def test_three_followers_follow_leave_and_rejoin(browser, live_server):
    with open_pages(browser, live_server, 4) as (presenter, *followers):
        presenter.goto("/text/attention?" + urlencode({"text": SENTENCE}))
        presenter.wait_for_function("() => document.querySelector('#heatmap .xtick') !== null")

        # 1. The teacher starts a room: a code, a link, a follower count.
        presenter.click("#present")
        presenter.wait_for_selector("#room-code")
        code = presenter.inner_text("#room-code")
        assert re.fullmatch(r"[A-Z2-9]{5}", code)
        link = presenter.input_value("#room-link")
        assert link == f"{live_server}/join/{code}"
        assert presenter.is_hidden("#present")

        # 2. Students open the link: the presenter's view, marked as following.
        for f in followers:
            f.goto(link)
            f.wait_for_selector("#room-role")
            assert f.inner_text("#room-role") == "Following" and f.inner_text("#room-code") == code
            assert "room" not in params(f)  # taken out of the address
            same_page(f, presenter)
        presenter.wait_for_function("() => document.getElementById('room-count').textContent === '3 following'")

        # 3. The teacher switches head, then layer: every follower follows.
        took = []
        for sel, value, want in (("#head", "1", {"head": 1, "text": SENTENCE}), ("#layer", "2", {"layer": 2, "head": 1})):
            t0 = time.monotonic()
            presenter.select_option(sel, value)
            for f in followers:
                wait_view(f, "/text/attention", want)
                took.append(time.monotonic() - t0)
            for f in followers:
                same_page(f, presenter)
        print(f"the last of 3 followers was on its way to the new view {max(took):.2f} s after the teacher's change")

        # 4. ... and types a new text.
        run_text(presenter, OTHER)
        presenter.wait_for_url(lambda url: dict(view(url)[1]).get("text") == OTHER)
        for f in followers:
            wait_view(f, "/text/attention", {"text": OTHER, "layer": 2, "head": 1})
            same_page(f, presenter)

        # 5. One student leaves to explore alone: the teacher's next change does not move that page.
        alone, *still = followers
        alone.click("#room-toggle")
        assert alone.inner_text("#room-role") == "Exploring on your own"
        assert alone.inner_text("#room-toggle") == "Rejoin"
        alone.select_option("#layer", "0")
        alone.wait_for_url(re.compile(r"layer=0"))
        own = params(alone)
        presenter.select_option("#head", "3")
        presenter.wait_for_url(re.compile(r"head=3"))
        for f in still:
            wait_view(f, "/text/attention", {"head": 3, "layer": 2})
            same_page(f, presenter)
        alone.wait_for_timeout(1500)  # well past the moment the others moved
        assert params(alone) == own and alone.input_value("#head") == "1" and alone.input_value("#layer") == "0"

        # 6. Rejoin: one click, and the page shows the teacher's view again.
        alone.click("#room-toggle")
        wait_view(alone, "/text/attention", {"head": 3, "layer": 2, "text": OTHER})
        assert alone.inner_text("#room-role") == "Following"
        same_page(alone, presenter)

        # 7. Only the presenter drives: a follower's own change reaches nobody.
        before = [params(f) for f in still]
        alone.click("#room-toggle")  # leave again, then change the view
        alone.select_option("#head", "0")
        alone.wait_for_url(re.compile(r"head=0"))
        alone.wait_for_timeout(1000)
        assert [params(f) for f in still] == before and params(presenter)["head"] == "3"

        ARTIFACTS.mkdir(exist_ok=True)
        presenter.screenshot(path=str(ARTIFACTS / "present-presenter.png"))
        still[0].screenshot(path=str(ARTIFACTS / "present-follower.png"))

        # 8. The teacher stops: every follower is told, and stays where it is.
        presenter.click("#room-stop")
        for f in followers:
            f.wait_for_function("(c) => document.getElementById('room-bar').textContent.includes(`Room ${c} has ended`)", arg=code)
        assert presenter.is_visible("#present")


EVERY_PAGE = [p for p, _, _ in TEXT_PAGES + VISION_PAGES + DIFFUSION_PAGES]


@pytest.mark.slow
def test_a_follower_follows_to_every_page(browser, live_server):
    """Text, ViT and diffusion pages alike: the presenter opens each page (by its nav link, as a
    teacher would), the follower's page arrives at the same address, both free of errors."""
    with open_pages(browser, live_server, 2) as (presenter, follower):
        presenter.goto("/")
        presenter.click("#present")
        link = presenter.input_value("#room-link")
        follower.goto(link)
        follower.wait_for_selector("#room-role")
        assert view(follower.url)[0] == "/"
        for path in EVERY_PAGE:
            presenter.click(f'.topbar nav a[href="{path}"]')
            presenter.wait_for_url(lambda url, p=path: view(url)[0] == p)
            presenter.wait_for_selector("#room-code")  # still presenting on the new page
            wait_view(follower, path, {}, timeout_s=30)
            # The presenter's page settles (it writes its defaults, a finished run's step, into its
            # address); the follower's page ends on the same view.
            same_address(follower, presenter)
            assert follower.inner_text("#room-role") == "Following"


SORTED_QUERY = "() => { const p = new URLSearchParams(location.search); p.sort(); return location.pathname + '?' + p.toString(); }"


def address(page) -> str | None:
    try:
        return page.evaluate(SORTED_QUERY)
    except PlaywrightError:  # the page is being replaced right now
        return None


def same_address(page, other, timeout_s: float = 60) -> None:
    """Wait until both pages show the same path and parameters, checked at the same moment."""
    deadline = time.monotonic() + timeout_s
    while (a := address(page)) is None or a != address(other):
        assert time.monotonic() < deadline, f"follower at {a}, presenter at {address(other)}"
        page.wait_for_timeout(300)
