"""The lessons as data (app/lessons.py): every step names an explorer page and only state keys that
page's script reads (parsed from its readState/visionState defaults), with values of the right type and
inside the shipped models; the example goes into the steps that use it, as text, and nowhere else."""

from __future__ import annotations

import json
import re
from urllib.parse import parse_qsl, urlsplit

import pytest

from app.lessons import EXAMPLE, EXAMPLE_KEY, LESSON_KEY, LESSONS, STEP_KEY
from app.routes.pages import DIFFUSION_VIEWS, TEXT_VIEWS, VISION_VIEWS
from app.settings import ROOT

JS = ROOT / "static" / "js"
PAGES = ([f"/text/{v}" for v in TEXT_VIEWS] + [f"/vision/{v}" for v in VISION_VIEWS]
         + [f"/diffusion/{v}" for v in DIFFUSION_VIEWS])
HTML = '<img src=x onerror=alert(1)> & "it" was <b>tired</b>'
STEPS = [(lesson, k, step) for lesson in LESSONS.values() for k, step in enumerate(lesson.steps, 1)]
STEP_IDS = [f"{lesson.id}-{k}" for lesson, k, _ in STEPS]


# ---------------------------------------------------------------------------------------------
# The pages' state keys, read from their scripts


def script_of(page: str):
    family, view = page.strip("/").split("/")
    return JS / f"{'' if family == 'text' else family + '_'}{view}.js"


def object_after(src: str, call: str) -> str | None:
    """The text of the object literal passed to the first `call(` in src ("" for `call()`), or None."""
    at = src.find(f"{call}(")
    if at < 0:
        return None
    i = at + len(call) + 1
    while src[i].isspace():
        i += 1
    if src[i] != "{":
        return ""
    depth, quote, start = 0, None, i
    for j in range(i, len(src)):
        ch = src[j]
        if quote:
            if ch == "\\":
                continue
            if ch == quote and src[j - 1] != "\\":
                quote = None
        elif ch in "\"'`":
            quote = ch
        elif ch in "{([":
            depth += 1
        elif ch in "})]":
            depth -= 1
            if depth == 0:
                return src[start + 1:j]
    raise AssertionError(f"unbalanced {call}( in the script")


def entries(body: str) -> dict[str, str]:
    """key -> default's kind ("number" or "string") of an object literal's top-level entries; spreads skipped."""
    body = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', body)  # strings can hold commas and colons
    parts, depth, cur = [], 0, ""
    for ch in body:
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    out = {}
    for part in (p.strip() for p in parts):
        if not part or part.startswith("..."):
            continue
        key, value = (s.strip() for s in part.split(":", 1))
        # numbers (and null, which readState parses as a number) vs strings (literals, DEFAULT_*, .value)
        out[key] = "number" if re.fullmatch(r"-?\d+(\.\d+)?|null", value) else "string"
    return out


def page_state(page: str) -> dict[str, str]:
    """The state keys (and their kinds) the page's script reads from its URL."""
    src = script_of(page).read_text(encoding="utf-8")
    body = object_after(src, "readState")
    if body is not None:
        return entries(body)
    body = object_after(src, "visionState")
    assert body is not None, f"{script_of(page).name} reads no state"
    shared = object_after((JS / "vision.js").read_text(encoding="utf-8"), "readState")
    return {**entries(shared), **entries(body)}


def test_the_parser_reads_what_the_pages_read():
    # pinned (as subsets: pages gain keys), so a parser that found nothing or misread a default's kind
    # cannot pass the step tests below
    def has(page, expected):
        state = page_state(page)
        assert expected.items() <= state.items(), f"{page}: {state}"
        assert all(re.fullmatch(r"[A-Za-z_]\w*", key) for key in state), f"{page}: {state}"

    has("/text/head", {"text": "string", "model": "string", "layer": "number", "head": "number", "q": "number",
                       "step": "number"})
    has("/text/compare", {"a": "string", "b": "string", "layer": "number", "head": "number", "qa": "number", "qb": "number"})
    has("/vision/heads", {"image": "string", "model": "string"})  # vision.js's shared keys, merged in
    has("/vision/attention", {"image": "string", "layer": "number", "head": "number", "from": "number"})
    has("/diffusion/generate", {"prompt": "string", "guidance": "number", "cmp": "string", "b": "number", "word": "number"})


@pytest.mark.parametrize("page", PAGES)
def test_no_page_uses_the_lesson_keys(page):
    state = page_state(page)
    assert state, f"{page} reads no state keys"
    assert not {LESSON_KEY, STEP_KEY, EXAMPLE_KEY} & set(state)


def test_common_js_keeps_the_lesson_keys():
    src = (JS / "common.js").read_text(encoding="utf-8")
    keys = re.search(r"LESSON_KEYS = (\[.*?\]);", src).group(1)
    assert json.loads(keys) == [LESSON_KEY, STEP_KEY, EXAMPLE_KEY]


# ---------------------------------------------------------------------------------------------
# Every step


def shipped(folder: str) -> dict:
    return json.loads((ROOT / "models" / folder / "config.json").read_text(encoding="utf-8"))


GPT2 = shipped("gpt2-tinystories")
VIT = shipped("vit-shapes")
HEAD_STEPS = len(re.findall(r'\{ name: "', (JS / "head.js").read_text(encoding="utf-8").split("const STEPS = [", 1)[1].split("];", 1)[0]))


def in_range(page: str, key: str, value) -> bool:
    """Whether a number is a real view of the shipped models (the pages would clamp it otherwise)."""
    patches = (VIT["image_size"] // VIT["patch_size"]) ** 2
    limits = {
        "text": {"layer": (0, GPT2["n_layer"] - 1), "head": (0, GPT2["n_head"] - 1), "q": (-1, 255),
                 "qa": (-1, 255), "qb": (-1, 255), "step": (1, HEAD_STEPS), "temperature": (0.1, 3)},
        "vision": {"layer": (0, VIT["num_hidden_layers"] - 1), "head": (-1, VIT["num_attention_heads"] - 1),
                   "from": (0, patches), "patch": (0, patches - 1), "step": (0, VIT["num_hidden_layers"] - 1)},
        "diffusion": {"t": (0, 999), "scene": (0, 10000), "seed": (0, 2**32 - 1), "steps": (1, 100),
                      "guidance": (0, 30), "b": (0, 30), "step": (-1, 99), "word": (-1, 76)},
    }[page.split("/")[1]]
    assert key in limits, f"no range known for {page} {key}: add it here"
    lo, hi = limits[key]
    return lo <= value <= hi


@pytest.mark.parametrize("lesson,k,step", STEPS, ids=STEP_IDS)
def test_step_sets_a_real_view(lesson, k, step):
    assert step.page in PAGES, f"{step.page} is not an explorer page"
    assert step.page.split("/")[1] == lesson.family
    state = page_state(step.page)
    for key, value in step.params.items():
        assert key in state, f"{step.page} does not read {key!r}; it reads {sorted(state)}"
        if value is EXAMPLE:
            assert state[key] == "string"
        elif state[key] == "number":
            assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{key}={value!r} is not a number"
            assert in_range(step.page, key, value), f"{step.page} {key}={value} is outside the shipped model"
        else:
            assert isinstance(value, str) and value, f"{key}={value!r}"
    if step.page == "/diffusion/generate" and "step" in step.params:
        assert step.params["step"] < step.params.get("steps", 20)
    assert step.title and step.text
    sentences = re.findall(r"[.!?](?=\s|$)", step.text)
    assert 1 <= len(sentences) <= 2, f"one or two sentences, not {len(sentences)}: {step.text}"


@pytest.mark.parametrize("lesson", LESSONS.values(), ids=list(LESSONS))
def test_lesson_uses_its_example_and_starts_on_its_family(lesson):
    key = {"text": "text", "image": "image", "prompt": "prompt"}[lesson.example_kind]
    users = [s for s in lesson.steps if EXAMPLE in s.params.values()]
    assert users, "no step uses the example"
    assert all(s.params.get(key) is EXAMPLE for s in users), f"the example goes into {key!r}"
    assert len(lesson.steps) >= 5 and len({s.title for s in lesson.steps}) == len(lesson.steps)
    lesson.check_example(lesson.example)


# ---------------------------------------------------------------------------------------------
# The example put into the steps


@pytest.mark.parametrize("lesson", LESSONS.values(), ids=list(LESSONS))
def test_step_urls_carry_the_view_and_the_lesson(lesson):
    for k, step in enumerate(lesson.steps, 1):
        url = urlsplit(lesson.url(k))
        assert url.path == step.page
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        assert query.pop(LESSON_KEY) == lesson.id and query.pop(STEP_KEY) == str(k)
        assert EXAMPLE_KEY not in query  # the default example is not repeated in the URL
        expected = {key: str(lesson.example if v is EXAMPLE else v) for key, v in step.params.items()}
        assert query == expected


def test_the_example_goes_in_as_text():
    lesson = LESSONS["gpt2-attention"]
    for k, step in enumerate(lesson.steps, 1):
        url = lesson.url(k, HTML)
        assert "<" not in url and '"' not in url and " " not in url  # encoded: it cannot end the href
        query = dict(parse_qsl(urlsplit(url).query))
        assert query[EXAMPLE_KEY] == HTML
        if step.params.get("text") is EXAMPLE:
            assert query["text"] == HTML
        assert HTML not in (query.get("a"), query.get("b"))  # the comparison keeps its own two sentences
    assert lesson.params(1, HTML)["text"] == HTML and lesson.params(1)["text"] == lesson.example
    assert EXAMPLE in lesson.steps[0].params.values()  # the data itself is left as it was


def test_steps_without_the_example_ignore_it():
    lesson = LESSONS["diffusion"]
    forward = lesson.steps[0]
    assert EXAMPLE not in forward.params.values()
    assert lesson.params(1, "a small blue ring") == forward.params


@pytest.mark.parametrize("lesson_id,example,says", [
    ("gpt2-attention", "   ", "empty"),
    ("diffusion", "x" * 1001, "at most 1,000"),
    ("vit-image", "../etc/passwd", "not a picture id"),
    ("vit-image", "<b>scene</b>", "not a picture id"),
])
def test_a_bad_example_says_what_is_wrong(lesson_id, example, says):
    with pytest.raises(ValueError, match=says):
        LESSONS[lesson_id].check_example(example)
