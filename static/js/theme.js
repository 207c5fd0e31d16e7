// The theme: projector (large type, thick lines, more contrast) on or off, and the colours auto
// (the system's prefers-color-scheme), light or dark. A classic script in <head>, so the classes are
// on <html> before the page is drawn (no flash of the wrong theme); the CSP allows it (script-src 'self').
//
// The choice is one word, "auto" | "light" | "dark", with "projector" in front ("projector",
// "projector-dark"). ?theme= in the address wins, so a shared link shows the page as it was shown;
// else this browser's last choice (localStorage). The header's controls set both. Internal links
// carry the choice on, so the address of any page reached from here shows it too.
//
// On <html>: theme-projector when on; theme-dark or theme-light, the colours in effect; data-theme,
// the choice. A change dispatches "glassbox:theme" on document: common.js redraws the figures.
(function () {
  "use strict";
  const KEY = "glassbox.theme";
  const PARAM = "theme";
  const COLOURS = ["auto", "light", "dark"];
  const systemDark = window.matchMedia ? window.matchMedia("(prefers-color-scheme: dark)") : null;

  /** "projector-dark" -> {projector: true, colours: "dark"}; null when it is not a theme. */
  function parse(value) {
    if (typeof value !== "string") return null;
    const projector = value === "projector" || value.startsWith("projector-");
    const colours = value === "projector" ? "auto" : projector ? value.slice("projector-".length) : value;
    return COLOURS.includes(colours) ? { projector, colours } : null;
  }

  function nameOf(t) {
    if (!t.projector) return t.colours;
    return t.colours === "auto" ? "projector" : `projector-${t.colours}`;
  }

  function stored() {
    try {
      return parse(window.localStorage.getItem(KEY));
    } catch (e) {
      return null; // storage refused (a privacy mode): the address alone keeps the choice
    }
  }

  function fromUrl() {
    return parse(new URLSearchParams(window.location.search).get(PARAM));
  }

  let current = fromUrl() || stored() || { projector: false, colours: "auto" };

  function apply() {
    const html = document.documentElement;
    const dark = current.colours === "dark" || (current.colours === "auto" && !!systemDark && systemDark.matches);
    html.classList.toggle("theme-projector", current.projector);
    html.classList.toggle("theme-dark", dark);
    html.classList.toggle("theme-light", !dark);
    html.dataset.theme = nameOf(current);
    syncControls();
  }

  function syncControls() {
    const projector = document.getElementById("theme-projector");
    if (projector) projector.setAttribute("aria-pressed", String(current.projector));
    const colours = document.getElementById("theme-colours");
    if (colours) colours.value = current.colours;
  }

  /** The user's choice: applied, remembered in this browser and written into the address. */
  function choose(t) {
    current = t;
    try {
      window.localStorage.setItem(KEY, nameOf(t));
    } catch (e) {
      // storage refused: the address still has it
    }
    const url = new URL(window.location.href);
    if (nameOf(t) === "auto") url.searchParams.delete(PARAM);
    else url.searchParams.set(PARAM, nameOf(t));
    window.history.replaceState(window.history.state, "", url.pathname + url.search + url.hash);
    changed();
  }

  function changed() {
    apply();
    document.dispatchEvent(new CustomEvent("glassbox:theme", { detail: { theme: nameOf(current) } }));
  }

  /** A click on a link to another glassbox page: the choice goes along in its address. */
  function carry(ev) {
    const a = ev.target.closest && ev.target.closest("a[href]");
    if (!a || a.target || a.hasAttribute("download") || nameOf(current) === "auto") return;
    const url = new URL(a.href, window.location.href);
    if (url.origin !== window.location.origin || /^\/(api|static|docs|redoc|openapi)/.test(url.pathname)) return;
    if (url.searchParams.has(PARAM)) return;
    url.searchParams.set(PARAM, nameOf(current));
    a.href = url.pathname + url.search + url.hash;
  }

  function wire() {
    const projector = document.getElementById("theme-projector");
    if (projector) projector.addEventListener("click", () => choose({ ...current, projector: !current.projector }));
    const colours = document.getElementById("theme-colours");
    if (colours) colours.addEventListener("change", () => choose({ ...current, colours: parse(colours.value) ? colours.value : "auto" }));
    syncControls();
  }

  apply();
  if (systemDark && systemDark.addEventListener) {
    systemDark.addEventListener("change", () => {
      if (current.colours === "auto") changed();
    });
  }
  document.addEventListener("click", carry, true);
  document.addEventListener("auxclick", carry, true);
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", wire);
  else wire();
})();
