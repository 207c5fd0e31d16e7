"""Languages (app/i18n.py): the catalogues against the sources, the language a request gets, and
every page rendered in every shipped language with no interface string left in English.

"No string left" is checked two ways: (a) every msgid the sources use (templates, N_() in app/, t()
in static/js) has a translation in every catalogue, with the same placeholders and markup, and no
catalogue keeps an id no source uses; (b) each page is rendered in English and in the other language,
and a text the two share is an untranslated string unless it is data (inside translate="no", <code>,
a form field) or a msgid its translator kept as it is."""

from __future__ import annotations

import re
from collections import Counter
from html.parser import HTMLParser

import pytest

from app import i18n
from app.lessons import LESSONS
from app.routes.pages import DIFFUSION_VIEWS, TEXT_VIEWS, VISION_VIEWS

PAGES = (["/", "/lessons", "/join"] + [f"/text/{v}" for v in TEXT_VIEWS] + [f"/vision/{v}" for v in VISION_VIEWS]
         + [f"/diffusion/{v}" for v in DIFFUSION_VIEWS])
OTHERS = [lang for lang in i18n.LANGUAGES if lang != i18n.SOURCE_LANGUAGE]


@pytest.fixture(scope="module")
def extracted():
    return {m.id: m for m in i18n.extract_all() if m.id}


@pytest.fixture(scope="module", params=OTHERS)
def catalog(request):
    return request.param, {m.id: m for m in i18n.read_catalog(request.param) if m.id}


# ---------------------------------------------------------------------------------------------
# (a) The catalogues against the sources


def test_sources_have_msgids(extracted):
    """Each kind of source feeds the catalogue (a broken extractor would make the next tests vacuous)."""
    files = {loc[0].split("/")[0] for m in extracted.values() for loc in m.locations}
    assert {"templates", "app", "static"} <= files
    assert "Lessons" in extracted and "How GPT-2 pays attention" in extracted
    assert any(loc[0].startswith("static/js/") for m in extracted.values() for loc in m.locations)


def test_every_msgid_is_translated(extracted, catalog):
    lang, messages = catalog
    missing = sorted(set(extracted) - set(messages))
    assert not missing, f"{len(missing)} msgids not in {lang}'s catalogue (python -m app.i18n update): {missing[:10]}"
    empty = sorted(str(mid) for mid in extracted if not all(forms(messages[mid].string)) or messages[mid].fuzzy)
    assert not empty, f"{len(empty)} msgids without a {lang} translation: {empty[:10]}"


def test_no_stale_msgids(extracted, catalog):
    lang, messages = catalog
    stale = sorted(set(messages) - set(extracted))
    assert not stale, f"{lang}'s catalogue has msgids no source uses (python -m app.i18n update): {stale[:10]}"


PLACEHOLDER = re.compile(r"%\(\w+\)s|%%|\{\w+\}")
TAG = re.compile(r"<[^>]*>")  # whole tags: an id a script fills, or a link's address, must stay as it is


def forms(s: str | tuple) -> tuple:
    """A message's forms: one, or a plural's several."""
    return s if isinstance(s, tuple) else (s,)


def test_translations_keep_placeholders_and_markup(catalog):
    """A lost %(name)s or {name} raises or shows a hole; a lost <kbd> or <a> loses a key or a link."""
    lang, messages = catalog
    for mid, m in messages.items():
        for form in forms(m.string):
            source = forms(mid)[-1]  # a plural's translations all have the plural msgid's placeholders
            assert Counter(PLACEHOLDER.findall(form)) == Counter(PLACEHOLDER.findall(source)), (lang, mid, form)
            assert Counter(TAG.findall(form)) == Counter(TAG.findall(source)), (lang, mid, form)


def test_catalogue_compiles_and_translates():
    for lang in OTHERS:
        tr = i18n.gettext_for(lang)
        assert tr("Lessons") != "Lessons" and tr("not a msgid at all") == "not a msgid at all"
    assert i18n.gettext_for("en")("Lessons") == "Lessons"


# ---------------------------------------------------------------------------------------------
# The language of a request


@pytest.mark.parametrize("header,lang", [
    ("es", "es"), ("es-ES,es;q=0.9,en;q=0.8", "es"), ("es-419", "es"), ("en-US,en;q=0.9,es;q=0.8", "en"),
    ("fr-FR, fr;q=0.9, es;q=0.5", "es"), ("de, fr", "en"), ("es;q=0, en;q=0.1", "en"), ("en;q=0.2, es;q=0.7", "es"),
    ("*", "en"), ("", "en"), (None, "en"), ("es;q=abc, ;;, @@", "en"), ("ES", "es"),
])
def test_accept_language(header, lang):
    assert i18n.negotiate(header) == lang


def test_lang_in_the_address_wins(client):
    r = client.get("/", params={"lang": "en"}, headers={"Accept-Language": "es"})
    assert '<html lang="en"' in r.text and r.headers["content-language"] == "en"
    r = client.get("/", params={"lang": "es"}, headers={"Accept-Language": "en"})
    assert '<html lang="es"' in r.text and r.headers["content-language"] == "es"
    r = client.get("/", params={"lang": "xx"}, headers={"Accept-Language": "es"})  # not shipped: the browser's
    assert '<html lang="es"' in r.text
    assert client.get("/").headers["vary"] == "Accept-Language"


def test_switch_keeps_the_rest_of_the_address(client):
    r = client.get("/text/attention", params={"text": "a <b> & c", "layer": 2, "lang": "es"})
    links = dict(re.findall(r'<a href="([^"]+)" hreflang="(\w+)"', r.text))
    assert set(links.values()) == set(i18n.LANGUAGES)
    assert links == {"/text/attention?text=a+%3Cb%3E+%26+c&amp;layer=2&amp;lang=" + code: code for code in i18n.LANGUAGES}


def test_js_messages(client):
    page = client.get("/text/attention", params={"lang": "es"}).text
    url = re.search(r'data-i18n="([^"]+)"', page).group(1).replace("&amp;", "&")
    r = client.get(url)
    assert r.status_code == 200 and "max-age" in r.headers["cache-control"]
    messages = r.json()
    assert set(messages) == set(i18n.extract_js_ids()) and all(messages.values())
    assert "data-i18n" not in client.get("/text/attention", params={"lang": "en"}).text  # English needs none
    assert client.get("/i18n/en.json").json() == {}
    assert client.get("/i18n/xx.json").status_code == 404


def test_lessons_api_in_each_language(client):
    gpt2 = LESSONS["gpt2-attention"]
    en = client.get("/api/lessons/gpt2-attention", params={"lang": "en"}).json()
    for lang in OTHERS:
        tr = i18n.gettext_for(lang)
        out = client.get("/api/lessons/gpt2-attention", params={"lang": lang}).json()
        assert out["title"] == tr(gpt2.title) != gpt2.title
        assert [s["text"] for s in out["steps"]] == [tr(s.text) for s in gpt2.steps]
        assert [s["url"] for s in out["steps"]] == [s["url"] for s in en["steps"]]  # the views are the same
        assert out["example"] == en["example"] == gpt2.example  # model input: never translated
        by_header = client.get("/api/lessons", headers={"Accept-Language": lang}).json()
        assert by_header["lessons"][0]["title"] == out["title"]
    assert client.get("/api/lessons", params={"lang": "xx"}).status_code == 422


def test_starting_a_lesson_keeps_the_language(client):
    r = client.get("/lessons/vit-image", params={"lang": "es"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].endswith("&lang=es")


# ---------------------------------------------------------------------------------------------
# (b) Every page in every language


class Texts(HTMLParser):
    """The visible texts of a page (and its title, aria-label, placeholder and alt attributes),
    leaving out data: translate="no" subtrees, <code>, scripts and form fields' contents."""

    SKIP = {"script", "style", "code", "kbd", "sub", "textarea", "option"}  # kbd: key names; sub: maths
    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[bool] = []  # per open element: inside data?
        self.texts: set[str] = set()

    def skipping(self) -> bool:
        return bool(self.stack) and self.stack[-1]

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        skip = self.skipping() or tag in self.SKIP or a.get("translate") == "no"
        if not skip:
            for name in ("title", "aria-label", "placeholder", "alt"):
                if a.get(name):
                    self.add(a[name])
        if tag not in self.VOID:
            self.stack.append(skip)

    def handle_endtag(self, tag):
        if tag not in self.VOID and self.stack:
            self.stack.pop()

    def handle_data(self, data):
        if not self.skipping():
            self.add(data)

    def add(self, text):
        text = " ".join(text.split())
        if re.search(r"[A-Za-z]{2}", text):
            self.texts.add(text)


def texts_of(html: str) -> set[str]:
    p = Texts()
    p.feed(html)
    return p.texts


@pytest.mark.parametrize("path", PAGES + ["/join/QQQQQ"])
def test_every_page_in_every_language(sd_client, path):
    english = sd_client.get(path, params={"lang": "en"})
    assert english.status_code in (200, 404) and '<html lang="en"' in english.text
    en_texts = texts_of(english.text)
    assert len(en_texts) > 5
    for lang in OTHERS:
        r = sd_client.get(path, params={"lang": lang})
        assert r.status_code == english.status_code and f'<html lang="{lang}"' in r.text
        kept = {m.id for m in i18n.read_catalog(lang) if m.id and m.string == m.id}  # the same in both
        same = sorted(t for t in texts_of(r.text) & en_texts if t not in kept and t != "glassbox")
        assert not same, f"{path} in {lang}: untranslated {same}"
