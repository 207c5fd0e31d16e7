"""Languages (issue part 7): the message catalogues and the language of a request.

Every string of the interface is an English msgid in one gettext catalogue per language,
app/locale/<lang>/LC_MESSAGES/messages.po. Three kinds of source feed it, all extracted by Babel
(`python -m app.i18n update` merges them into every .po; tests/test_i18n.py fails while one lacks
a translation or keeps a stale id):

- templates/*.html: `{% trans %}...{% endtrans %}` and `_("...")` (Jinja's i18n extension);
- app/*.py: strings defined as data (page names, lesson texts) marked with the no-op `N_()` and
  translated where they are shown, for the request's language;
- static/js/*.js: `t("...", {name: value})` (static/js/i18n.js), whose translations the page
  fetches as JSON from GET /i18n/<lang>.json.

The .po files are compiled in memory when first used (Babel's own reader and writer), so a fresh
clone needs no build step and no compiled .mo is committed.

A request's language: `?lang=` when it names a shipped language (the switch in the header sets it,
and the pages keep it in their address, so a shared link keeps it), else the browser's
Accept-Language, else English. What a model reads or writes (tokens, class labels, prompts, a
user's text) is data and is never translated."""

from __future__ import annotations

import gettext
import hashlib
import io
import json
import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po, write_po
from babel.support import Translations

from app.settings import ROOT

# code -> the language's own name, for the switch (each name written as its speakers write it)
LANGUAGES: dict[str, str] = {"en": "English", "es": "Español"}
SOURCE_LANGUAGE = "en"  # the msgids are English: English needs no catalogue of its own
LANG_KEY = "lang"  # the query key; static/js/i18n.js and common.js writeState() keep it
LOCALE_DIR = ROOT / "app" / "locale"
DOMAIN = "messages"

# What Babel reads, and how. Jinja's `trimmed` policy is the one templates render with (pages.py),
# so a msgid spread over several template lines is one line of text in the catalogue.
JINJA_OPTIONS = {"trimmed": "true", "newstyle_gettext": "true", "extensions": "jinja2.ext.i18n"}
SOURCES = (  # (folder, Babel method map, options, keywords)
    (ROOT / "templates", [("*.html", "jinja2.ext:babel_extract")], {"*.html": JINJA_OPTIONS},
     {"_": None, "gettext": None, "ngettext": (1, 2)}),  # {% trans %} blocks become gettext and ngettext
    (ROOT / "app", [("**.py", "python")], {}, {"N_": None, "_": None}),
    # jsx off: in plain JS a regex such as /</g would be read as the start of a JSX tag, and what follows lost
    (ROOT / "static" / "js", [("*.js", "javascript")], {"*.js": {"parse_template_string": True, "jsx": False}}, {"t": None}),
)
JS_SOURCE = ROOT / "static" / "js"


def N_(message: str) -> str:
    """Mark a string defined as data for the catalogue; it is translated where it is shown."""
    return message


def po_path(lang: str) -> Path:
    return LOCALE_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.po"


def read_catalog(lang: str) -> Catalog:
    with po_path(lang).open("rb") as f:
        return read_po(f, locale=lang, domain=DOMAIN)


@lru_cache(maxsize=None)
def translations(lang: str) -> gettext.NullTranslations:
    """The gettext translations of a shipped language (English: the msgids themselves)."""
    if lang not in LANGUAGES:
        raise KeyError(f"no language {lang!r}; the languages are: {', '.join(LANGUAGES)}")
    if lang == SOURCE_LANGUAGE:
        return gettext.NullTranslations()
    buf = io.BytesIO()
    write_mo(buf, read_catalog(lang))  # compiled in memory: nothing to build, no binary committed
    buf.seek(0)
    return Translations(buf, domain=DOMAIN)


def gettext_for(lang: str) -> Callable[[str], str]:
    return translations(lang).gettext


# ---------------------------------------------------------------------------------------------
# The language of a request

_TAG = re.compile(r"^\s*([A-Za-z]{1,8}|\*)(?:[-_][A-Za-z0-9]{1,8})*\s*$")
_QUALITY = re.compile(r"^\s*q\s*=\s*(0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)\s*$")  # RFC 9110 §12.4.2


def negotiate(accept_language: str | None) -> str:
    """The shipped language an Accept-Language header likes best (RFC 9110 §12.5.4), else English."""
    ranked = []
    for i, part in enumerate((accept_language or "")[:1000].split(",")):
        tag, _, params = part.partition(";")
        m = _TAG.match(tag)
        if not m:
            continue
        q = 1.0
        if params.strip():
            qm = _QUALITY.match(params)
            if not qm:
                continue  # a weight we cannot read: leave the tag out rather than guess
            q = float(qm.group(1))
        if q > 0:
            ranked.append((-q, i, m.group(1).lower()))
    for _, _, primary in sorted(ranked):
        if primary in LANGUAGES:
            return primary
        if primary == "*":
            return SOURCE_LANGUAGE
    return SOURCE_LANGUAGE


def chosen_language(query: Mapping[str, str], accept_language: str | None) -> str:
    """`lang` from the address when it names a shipped language, else the browser's choice."""
    lang = query.get(LANG_KEY)
    return lang if lang in LANGUAGES else negotiate(accept_language)


# ---------------------------------------------------------------------------------------------
# The JavaScript side: the msgids of static/js, with their translations


def extract_js_ids() -> list[str]:
    """Every msgid of a t("...") call in static/js, in file order."""
    seen: dict[str, None] = {}
    folder, method_map, options, keywords = SOURCES[2]
    for _file, _line, message, _comments, _context in extract_from_dir(folder, method_map, options, keywords):
        if isinstance(message, str):
            seen.setdefault(message, None)
    return list(seen)


@lru_cache(maxsize=None)
def js_catalog(lang: str) -> tuple[dict[str, str], str]:
    """(msgid -> translation for the JS msgids, a version of it for the URL), made once per process."""
    tr = gettext_for(lang)
    messages = {mid: tr(mid) for mid in extract_js_ids()} if lang != SOURCE_LANGUAGE else {}
    body = json.dumps(messages, ensure_ascii=False, sort_keys=True)
    return messages, hashlib.sha256(body.encode()).hexdigest()[:12]


# ---------------------------------------------------------------------------------------------
# Extraction and the catalogues' upkeep (`python -m app.i18n update`)


def extract_all() -> Catalog:
    """Every msgid in the sources, with where it is used (relative paths), as a Babel template."""
    template = Catalog(domain=DOMAIN, project="glassbox", charset="utf-8")
    for folder, method_map, options, keywords in SOURCES:
        for file, line, message, comments, _context in extract_from_dir(folder, method_map, options, keywords):
            if message and all(message if isinstance(message, tuple) else (message,)):  # a plural is a tuple
                where = (str((folder / file).relative_to(ROOT)), line)
                template.add(message, locations=[where], auto_comments=comments)
    return template


def new_catalog(lang: str) -> Catalog:
    return Catalog(locale=lang, domain=DOMAIN, project="glassbox", version="", fuzzy=False,
                   header_comment=f"# glassbox's interface and lessons in {LANGUAGES[lang]} ({lang}); app/i18n.py says how.",
                   last_translator="glassbox", language_team="glassbox")


def update() -> dict[str, tuple[int, int]]:
    """Merge the extracted msgids into every shipped catalogue: new ids get an empty translation
    (tests/test_i18n.py then names them), ids no source uses any more are dropped."""
    template = extract_all()
    out = {}
    for lang in LANGUAGES:
        if lang == SOURCE_LANGUAGE:
            continue
        path = po_path(lang)
        catalog = read_catalog(lang) if path.exists() else new_catalog(lang)
        before = {m.id for m in catalog if m.id}
        created = catalog.creation_date
        catalog.update(template, no_fuzzy_matching=True)
        catalog.obsolete.clear()
        catalog.creation_date = created  # no churn in the header from an update that changes nothing
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as f:
            # file names without line numbers: code moving about does not rewrite the catalogue
            write_po(f, catalog, width=100, sort_output=False, include_previous=False, include_lineno=False)
        after = {m.id for m in catalog if m.id}
        out[lang] = (len(after - before), len(before - after))
    return out


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["update"]:
        sys.exit("usage: python -m app.i18n update   (merge the extracted msgids into app/locale/*/LC_MESSAGES/messages.po)")
    for lang, (added, dropped) in update().items():
        print(f"{po_path(lang).relative_to(ROOT)}: {added} new msgids (untranslated), {dropped} dropped")
