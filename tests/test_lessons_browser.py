"""The lessons in Chromium against the real server, with the fixtures of test_pages_browser.py (every
test fails on a console error, a page error, a failed request, an unprovoked 4xx/5xx or a dialog):
Next through the whole GPT-2 lesson, each step's page holding the step's view; the example edited in
the lesson box and used by the next step, as text; the ViT lesson throughout; diffusion steps."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from test_pages_browser import ARTIFACTS, browser, page  # noqa: F401 (fixtures)

pytestmark = pytest.mark.browser
HTML_EXAMPLE = '<img src=x onerror=alert(1)> <b>The dog</b> was happy because it'

# What shows that a page has drawn its view (it writes its state to the URL, then draws).
DRAWN = {
    "/text/attention": "#heatmap .main-svg",
    "/text/head": "#step-plots .main-svg",
    "/text/heads": "#grid .main-svg",
    "/text/next": "#candidates li",
    "/text/compare": "#chart-b .main-svg",
    "/vision/patches": "#embedding .main-svg",
    "/vision/heads": "#pos-sim .main-svg",
    "/vision/attention": "#matrix .main-svg",
    "/vision/rollout": "#self-chart .main-svg",
    "/vision/prediction": "#bars .main-svg",
    "/diffusion/forward": "#latents .main-svg",
}
# The control of each state key that holds its value on the page (per page where the id differs).
CONTROL = {"text": "#text", "layer": "#layer", "head": "#head", "temperature": "#temperature", "a": "#text-a",
           "image": "#gallery", "patch": "#patch", "from": "#from", "t": "#t", "scene": "#scene", "prompt": "#prompt",
           "steps": "#steps", "guidance": "#guidance", "cmp": "#cmp"}
CONTROL_ON = {("/text/compare", "b"): "#text-b", ("/diffusion/generate", "b"): "#b", ("/vision/rollout", "step"): "#step",
              ("/diffusion/forward", "seed"): "#noise-seed", ("/diffusion/generate", "seed"): "#seed"}


def lesson_json(base: str, lesson_id: str, example: str | None = None) -> dict:
    params = {} if example is None else {"example": example}
    return httpx.get(f"{base}/api/lessons/{lesson_id}", params=params, timeout=60).json()


def query(url: str) -> dict:
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


def wait_drawn(page, path: str, params: dict) -> None:
    """Wait until the page has loaded the step's view and drawn it."""
    # the page wrote its own state (model is filled in once the model list is read)
    page.wait_for_function("() => new URLSearchParams(location.search).has('model')")
    if path == "/diffusion/generate":
        page.wait_for_function("() => document.getElementById('progress-text').textContent.startsWith('Done')")
        if params.get("cmp") == "guidance":
            page.wait_for_function("(b) => document.getElementById('b-caption').textContent === `B: guidance ${b}`", arg=params["b"])
    else:
        page.wait_for_selector(DRAWN[path], state="attached")


def check_view(page, step: dict) -> None:
    """The panel says step k; the page holds every value of the step's view, in its controls and its URL."""
    path, params = urlsplit(step["url"]).path, query(step["url"])
    k = params["lstep"]
    page.wait_for_function(
        "([k, text]) => document.getElementById('lesson-k').textContent === k && document.getElementById('lesson-text').textContent === text",
        arg=[k, step["text"]],
    )
    assert page.locator("#lesson").is_visible()
    wait_drawn(page, path, params)
    assert urlsplit(page.url).path == path
    now = query(page.url)
    for key, value in params.items():
        if (path, key) == ("/diffusion/generate", "step") and value == "-1":
            value = str(int(params["steps"]) - 1)  # "the last step": the page writes which one it is
        assert now.get(key) == value, f"{path} {key}: the URL says {now.get(key)!r}, the step {value!r}"
        control = CONTROL_ON.get((path, key), CONTROL.get(key))
        if control:
            assert page.input_value(control) == value, f"{path} {control} holds {page.input_value(control)!r}, not {value!r}"
    if path == "/text/head":
        assert page.locator("#step-label").inner_text().startswith(f"Step {params['step']} of ")
    if path == "/text/compare":
        for side in ("a", "b"):
            assert page.get_attribute(f"#tokens-{side} .token.selected", "data-pos") == params[f"q{side}"]
    if path == "/diffusion/generate":
        if "word" in params:
            assert page.get_attribute("#words .token.selected", "data-pos") == params["word"]
        if params.get("cmp"):
            assert page.locator("#compare-view").is_visible()


def next_step(page) -> None:
    with page.expect_navigation():
        page.click("#lesson-next")


def test_gpt2_lesson_next_through_every_step(page, live_server):
    lesson = lesson_json(live_server, "gpt2-attention")
    page.goto("/lessons")
    with page.expect_navigation():
        page.locator("section[aria-labelledby='lesson-gpt2-attention'] button[type=submit]").click()
    n = len(lesson["steps"])
    for k, step in enumerate(lesson["steps"], 1):
        check_view(page, step)
        assert page.locator("#lesson-n").inner_text() == str(n)
        assert page.input_value("#lesson-example") == lesson["example"]
        assert page.is_disabled("#lesson-prev") == (k == 1)
        assert page.is_disabled("#lesson-next") == (k == n)
        if k < n:
            next_step(page)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "lesson-gpt2.png"), full_page=True)
    with page.expect_navigation():
        page.click("#lesson-prev")
    check_view(page, lesson["steps"][n - 2])


def test_edited_example_is_used_by_the_next_steps_as_text(page, live_server):
    lesson = lesson_json(live_server, "gpt2-attention")
    page.goto(lesson["steps"][0]["url"])
    check_view(page, lesson["steps"][0])

    page.fill("#lesson-example", HTML_EXAMPLE)
    with page.expect_navigation():
        page.click("#lesson-example-form button[type=submit]")
    edited = lesson_json(live_server, "gpt2-attention", HTML_EXAMPLE)
    check_view(page, edited["steps"][0])  # this step again, with the new text
    assert page.input_value("#text") == HTML_EXAMPLE
    next_step(page)
    check_view(page, edited["steps"][1])
    assert page.input_value("#text") == HTML_EXAMPLE and query(page.url)["example"] == HTML_EXAMPLE
    assert page.input_value("#lesson-example") == HTML_EXAMPLE
    assert page.locator("#lesson b, #lesson img").count() == 0  # text, never markup

    page.reload()  # the URL is the whole view: the lesson and its example come back
    check_view(page, edited["steps"][1])

    page.click("#lesson-leave")
    assert page.locator("#lesson").is_hidden()
    assert not {"lesson", "lstep", "example"} & set(query(page.url))
    assert query(page.url)["text"] == HTML_EXAMPLE  # the page's view stays


def test_a_bad_example_is_refused_in_the_box(page, live_server):
    page.watch.allow(422)
    lesson = lesson_json(live_server, "diffusion")
    page.goto(lesson["steps"][0]["url"])
    check_view(page, lesson["steps"][0])
    page.fill("#lesson-example", "   ")
    page.click("#lesson-example-form button[type=submit]")
    page.wait_for_selector("#lesson-error:not([hidden])")
    assert "empty" in page.locator("#lesson-error").inner_text()


def test_vit_lesson_every_step_with_another_picture(page, live_server):
    lesson = lesson_json(live_server, "vit-image", "scene-2")
    page.goto("/lessons")
    page.select_option("#example-vit-image", "scene-2")
    with page.expect_navigation():
        page.locator("section[aria-labelledby='lesson-vit-image'] button[type=submit]").click()
    for k, step in enumerate(lesson["steps"], 1):
        check_view(page, step)
        assert page.input_value("#lesson-example-picture") == "scene-2"
        if k < len(lesson["steps"]):
            next_step(page)


def test_diffusion_lesson_steps(page, live_server):
    lesson = lesson_json(live_server, "diffusion")
    steps = lesson["steps"]
    page.goto(steps[0]["url"])
    check_view(page, steps[0])  # the forward process: the latent space
    next_step(page)
    check_view(page, steps[1])  # noised at t = 300
    # cross-attention, then guidance compared: the prompt comes from the lesson
    k = next(i for i, s in enumerate(steps) if "word" in query(s["url"]))
    page.goto(steps[k]["url"])
    check_view(page, steps[k])
    assert page.input_value("#prompt") == lesson["example"]
    next_step(page)
    check_view(page, steps[k + 1])
