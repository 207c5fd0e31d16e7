"""The Stable Diffusion pages in Chromium against the real server (the shipped pipeline when it is
there, else the tiny random one), with the fixtures of test_pages_browser.py: every test fails on a
console error, a page error, a failed request, an unprovoked 4xx/5xx or a dialog. What the page shows
is checked against the same run read straight from the HTTP stream."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import httpx
import numpy as np
import pytest

from app.wire import decode
from test_pages_browser import ARTIFACTS, api, browser, page  # noqa: F401 (fixtures)

pytestmark = pytest.mark.browser


def stream(base: str, body: dict) -> dict:
    """A run read from /api/diffusion/run as the page reads it: {head, steps: [...], done}."""
    out = {"steps": []}
    with httpx.stream("POST", base + "/api/diffusion/run", json=body, timeout=120) as r:
        assert r.status_code == 200, r.read()
        event = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
                if event == "step":
                    out["steps"].append(data)
                else:
                    out[event] = data
    return out


def record_progress(page) -> None:
    """Keep every text #progress-text shows, in order (a MutationObserver sees each change)."""
    page.evaluate(
        """() => {
            window.__progress = [];
            new MutationObserver((records) => {
                for (const r of records) for (const n of r.addedNodes) window.__progress.push(n.textContent);
            }).observe(document.getElementById('progress-text'), { childList: true });
        }"""
    )


def wait_paths(page, n: int) -> None:
    """The run (and the latent map after it) is finished when the map shows n runs."""
    page.wait_for_function("(n) => (document.getElementById('paths').data || []).length === n", arg=n)


def decoded(base: str, body: dict, step: int, which: str) -> str:
    """The VAE's exact picture of a step of a finished run, as the page asks for it."""
    r = api(base, "/api/diffusion/decode", {**body, "step": step, "which": which})
    assert r.status_code == 200, r.text
    return r.json()["image"]


def wait_src(page, selector: str, url: str) -> None:
    page.wait_for_function("([sel, url]) => document.querySelector(sel).src === url", arg=[selector, url])


def step_out(page) -> str:
    return page.locator("#step-out").inner_text()


def test_generate_streams_scrubs_hovers_compares(page, live_server):
    body = {"prompt": "a red circle", "seed": 3, "steps": 6, "guidance": 5}
    page.goto("/diffusion/generate?" + urlencode({"prompt": "a blue square", "steps": 2, "seed": 1}))
    wait_paths(page, 1)

    # a new prompt, typed: its steps arrive one by one, in order, then the run is done
    record_progress(page)
    page.fill("#prompt", body["prompt"])
    page.fill("#seed", "3")
    page.fill("#steps", "6")
    page.press("#prompt", "Enter")
    page.wait_for_function("() => (window.__progress || []).some((t) => t.startsWith('Done: 6 steps in'))")
    seen = page.evaluate("() => window.__progress")
    stepped = [t for t in seen if t.startswith("Step ")]
    assert [int(t.split()[1]) for t in stepped] == [1, 2, 3, 4, 5, 6], seen
    assert all(" of 6" in t for t in stepped)
    assert seen.index(stepped[-1]) < max(i for i, t in enumerate(seen) if t.startswith("Done"))
    assert step_out(page).startswith("6 of 6")
    page.wait_for_url(lambda u: "prompt=a+red+circle" in u and "steps=6" in u)

    # the same run, read from the server's stream (a cache replay): what the page shows must match it
    run = stream(live_server, body)
    assert [s["index"] for s in run["steps"]] == list(range(6))
    # while it streamed, the page showed the fast previews; a finished run's shown step is the VAE's decode
    wait_src(page, "#latent-img", decoded(live_server, body, 5, "latent"))
    page.wait_for_function("() => document.getElementById('x0').dataset.kind === 'VAE decode'")
    assert page.evaluate("() => document.getElementById('x0').layout.images[0].source") == decoded(live_server, body, 5, "x0")
    assert page.locator("#strip .strip-item").count() == 4  # steps 1, 2, 3, 5 of the strip exist in a 6-step run

    # scrub: the keyboard and the slider move through the steps
    page.locator("h1").click()
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    assert step_out(page).startswith("4 of 6")
    wait_src(page, "#latent-img", decoded(live_server, body, 3, "latent"))
    page.evaluate("() => { const s = document.getElementById('step'); s.value = '1'; s.dispatchEvent(new Event('input')); }")
    assert step_out(page).startswith("2 of 6")
    t1 = round(run["steps"][1]["timestep"])
    assert f"(t = {t1})" in step_out(page)
    page.wait_for_url(lambda u: "step=1" in u)

    # hover a word: its cross-attention map (this step's) is drawn over x̂₀
    tokens = run["head"]["tokens"]
    w = tokens.index("circle")
    page.hover(f"#words .token[data-pos='{w}']")
    page.wait_for_function("() => document.getElementById('x0').dataset.word === 'circle'")
    assert "“circle”" in page.locator("#x0-caption").inner_text()
    drawn = np.array(page.evaluate("() => document.getElementById('x0').data[0].z"), dtype=float)
    want = decode(run["steps"][1]["words"])[w]
    np.testing.assert_allclose(drawn, want, atol=2e-3)
    page.hover("h1")
    page.wait_for_function("() => document.getElementById('x0').dataset.word === ''")

    # the clicked strip item jumps there
    page.click("#strip .strip-item[data-step='4']")
    assert step_out(page).startswith("5 of 6")

    # play runs to the end
    page.click("#play")
    page.wait_for_function("() => document.getElementById('step-out').textContent.startsWith('6 of 6')")

    # compare two seeds: run B streams beside A, the slider moves both; both runs land on the latent map
    page.select_option("#cmp", "seed")
    page.fill("#b", "4")
    page.click("#compare")
    page.wait_for_function("() => document.getElementById('b-caption').textContent === 'B: seed 4'")
    b = stream(live_server, {**body, "seed": 4})
    page.evaluate("() => { const s = document.getElementById('step'); s.value = '2'; s.dispatchEvent(new Event('input')); }")
    wait_src(page, "#a-img", decoded(live_server, body, 2, "x0"))
    wait_src(page, "#b-img", decoded(live_server, {**body, "seed": 4}, 2, "x0"))
    assert len(b["steps"]) == 6
    page.wait_for_function("() => (document.getElementById('paths').data || []).length === 2")
    pts = page.evaluate("() => document.getElementById('paths').data.map((t) => t.x.length)")
    assert pts == [6, 6]
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "diffusion_generate.png"), full_page=True)


def test_reload_replays_the_run_from_the_link(page, live_server):
    before = api(live_server, "/healthz").json()["diffusion_runs"]
    url = "/diffusion/generate?" + urlencode({"prompt": "a green ring", "seed": 9, "steps": 3, "step": 1, "word": 2})
    page.goto(url)
    page.wait_for_function("() => document.getElementById('progress-text').textContent.startsWith('Done')")
    assert step_out(page).startswith("2 of 3")
    page.wait_for_function("() => document.getElementById('x0').dataset.word !== ''")  # the pinned word
    page.reload()
    page.wait_for_function("() => document.getElementById('progress-text').textContent.startsWith('Done')")
    assert step_out(page).startswith("2 of 3")
    after = api(live_server, "/healthz").json()["diffusion_runs"]
    assert after["computed"] - before["computed"] <= 1  # the reload was served from the cache
    assert after["cached"] > before["cached"]


def test_html_in_the_prompt_is_text_and_long_prompts_are_cut_with_a_notice(page, live_server):
    evil = "<b>red</b>"  # 10 tokens with start and end: within even the tiny test model's 12
    page.goto("/diffusion/generate?" + urlencode({"prompt": evil, "steps": 1}))
    wait_paths(page, 1)
    assert page.locator("#words b").count() == 0
    chips = page.locator("#words .token .txt").all_inner_texts()
    assert "<" in chips and "red" in chips and ">" in chips
    assert page.input_value("#prompt") == evil
    assert page.locator("#notice").is_hidden()

    long = " ".join(["a red star"] * 40)
    page.fill("#prompt", long)
    page.press("#prompt", "Enter")
    page.wait_for_function("() => !document.getElementById('notice').hidden")
    assert "cut" in page.locator("#notice").inner_text()


def test_bad_settings_get_a_clear_error(page):
    page.watch.allow(422)
    page.goto("/diffusion/generate?" + urlencode({"prompt": "a red star", "steps": 500}))
    page.wait_for_function("() => !document.getElementById('error').hidden")
    assert "steps" in page.locator("#error").inner_text().lower()
    page.fill("#steps", "2")
    page.fill("#guidance", "31")
    page.press("#prompt", "Enter")
    page.wait_for_function("() => document.getElementById('error').textContent.toLowerCase().includes('guidance')")
    page.fill("#guidance", "3")
    page.press("#prompt", "Enter")
    page.wait_for_function("() => document.getElementById('progress-text').textContent.startsWith('Done')")
    assert page.locator("#error").is_hidden()


def test_forward_process_page(page, live_server):
    page.goto("/diffusion/forward?" + urlencode({"scene": 3, "t": 0}))
    page.wait_for_function("() => document.getElementById('formula').textContent.startsWith('t = 0')")
    want = api(live_server, "/api/diffusion/forward", {"scene": 3, "t": 0}).json()
    assert page.get_attribute("#clean", "src") == want["image"]
    assert page.locator("#caption").inner_text() == want["caption"]
    assert page.evaluate("() => document.getElementById('latents').data.length") == 8  # 4 channels, clean and noised

    page.evaluate("() => { const s = document.getElementById('t'); s.value = '999'; s.dispatchEvent(new Event('input')); }")
    page.wait_for_function("() => document.getElementById('formula').textContent.startsWith('t = 999')")
    late = api(live_server, "/api/diffusion/forward", {"scene": 3, "t": 999}).json()
    assert f"{late['alpha_bar']:.4f}" in page.locator("#formula").inner_text()
    assert page.get_attribute("#noisy", "src") == late["noisy"]
    page.wait_for_url(lambda u: "t=999" in u)
    page.click("#next-scene")
    page.wait_for_url(lambda u: "scene=4" in u)
    other = api(live_server, "/api/diffusion/forward", {"scene": 4, "t": 999}).json()
    page.wait_for_function("(c) => document.getElementById('caption').textContent === c", arg=other["caption"])


def test_a_scheduler_that_repeats_a_timestep_says_so(page):
    """PNDM (SD 1.x's own) calls the model once more than the steps asked; the page counts the calls."""
    page.goto("/diffusion/generate?" + urlencode({"prompt": "a red star", "steps": 3, "scheduler": "pndm"}))
    wait_paths(page, 1)
    assert page.input_value("#scheduler") == "pndm"
    assert "4 times for 3 steps" in page.locator("#notice").inner_text()
    assert step_out(page).startswith("4 of 4")
    assert page.locator("#strip .strip-item").count() == 3  # steps 1, 2, 3 of the strip
