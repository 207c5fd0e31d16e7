// Languages (app/i18n.py). The server renders each page in the request's language and puts it on
// <html lang>; for any language but English it also names, in data-i18n, the JSON of the page
// scripts' translations (GET /i18n/<lang>.json: msgid -> translation). t(msgid, vars) looks a msgid
// up (the English msgid when it has none) and fills its {name} placeholders.
//
// The language rides along in the address (`lang`), as the theme does: the switch in the header
// keeps the rest of the address, a click on a link to another glassbox page carries it, and
// common.js writeState() keeps it, so a shared link shows the page in the language it was shown in.

export const LANG_KEY = "lang";
export const LANG = document.documentElement.lang || "en";

/** @type {Record<string, string>} */
let messages = {};
const source = document.documentElement.dataset.i18n;
if (source) {
  // A top-level await: every module that imports t() runs once the translations are here.
  try {
    const res = await fetch(source, { headers: { Accept: "application/json" } });
    if (res.ok) messages = await res.json();
    else console.warn(`glassbox: no translations (${res.status}); the page scripts speak English`);
  } catch (e) {
    console.warn("glassbox: no translations; the page scripts speak English", e);
  }
}

/**
 * The translation of `msgid` (an English string, extracted from t() calls into the catalogue), its
 * {name} placeholders filled from `vars`.
 * @param {string} msgid
 * @param {Record<string, any>} [vars]
 */
export function t(msgid, vars) {
  const s = messages[msgid] || msgid;
  return vars ? s.replace(/\{(\w+)\}/g, (m, name) => (name in vars ? String(vars[name]) : m)) : s;
}

/** A glassbox URL with this page's `lang` put in, when the page's address has one (else unchanged). */
export function withLang(href) {
  const lang = new URLSearchParams(window.location.search).get(LANG_KEY);
  if (!lang) return href;
  const url = new URL(href, window.location.href);
  if (url.origin !== window.location.origin || url.searchParams.has(LANG_KEY)) return href;
  url.searchParams.set(LANG_KEY, lang);
  return url.pathname + url.search + url.hash;
}

/** A click on a link to another glassbox page: the language goes along in its address. */
function carry(ev) {
  const a = ev.target.closest && ev.target.closest("a[href]");
  if (!a || a.target || a.hasAttribute("download")) return;
  if (a.dataset.lang) {
    // The switch: this page's address as it is now (the page may have rewritten it), in that language.
    const url = new URL(window.location.href);
    url.searchParams.set(LANG_KEY, a.dataset.lang);
    a.href = url.pathname + url.search + url.hash;
    return;
  }
  const url = new URL(a.href, window.location.href);
  if (/^\/(api|static|docs|redoc|openapi|i18n)\b/.test(url.pathname)) return;
  a.href = withLang(a.href);
}

document.addEventListener("click", carry, true);
document.addEventListener("auxclick", carry, true);
