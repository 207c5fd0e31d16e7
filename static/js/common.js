// Shared by every page: the wire decoder, the JSON API client, UI state in the URL, the error box,
// token chips, Plotly helpers, figures in the page's theme and the page's keys. Anything a user
// typed or a token's text reaches the DOM through textContent only (never innerHTML), and Plotly
// labels are entity-escaped (see plotlyText).

// The page's language (static/js/i18n.js): t("English msgid", {name: value}) on every interface string.
import { LANG, LANG_KEY, t } from "./i18n.js";

export { LANG, LANG_KEY, t } from "./i18n.js";

/**
 * @typedef {{shape: number[], dtype: string, data: string}} WireArray  float16, base64, C order
 * @typedef {{id: number, text: string}} Token
 * @typedef {{id: number, text: string, prob: number, logit?: number}} Candidate
 */

export const DEFAULT_TEXT = "The animal didn't cross the street because it was too tired";

// ---------------------------------------------------------------------------------------------
// Wire arrays: base64 -> bytes -> float16 -> Float32Array

let F16_TABLE = null; // all 65 536 float16 bit patterns, decoded once

/** Decode one float16 bit pattern (0..65535) to a JS number; ±inf and NaN included. */
export function halfToFloat(h) {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24; // zero and subnormals
  if (exp === 0x1f) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

function f16Table() {
  if (!F16_TABLE) {
    F16_TABLE = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) F16_TABLE[h] = halfToFloat(h);
  }
  return F16_TABLE;
}

/** base64 string -> Uint8Array */
export function base64ToBytes(b64) {
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/**
 * Decode a wire array to {shape, data: Float32Array} (flat, C order).
 * @param {WireArray} arr
 */
export function decodeArray(arr) {
  if (arr.dtype && arr.dtype !== "float16") throw new Error(`unsupported dtype ${arr.dtype}`);
  const bytes = base64ToBytes(arr.data);
  const n = bytes.length >> 1;
  const expected = arr.shape.reduce((a, b) => a * b, 1);
  if (n !== expected) throw new Error(`array has ${n} values, shape ${arr.shape} needs ${expected}`);
  const table = f16Table();
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = table[bytes[2 * i] | (bytes[2 * i + 1] << 8)]; // little-endian
  return { shape: arr.shape.slice(), data };
}

/**
 * Flat C-order values -> nested JS arrays of the given shape (what Plotly's z wants).
 * @param {{shape: number[], data: ArrayLike<number>}} a
 * @param {(v: number) => any} [map]  e.g. nonFiniteToNull
 */
export function toNested(a, map) {
  const { shape, data } = a;
  const f = map || ((v) => v);
  function build(dim, offset) {
    const n = shape[dim];
    if (dim === shape.length - 1) {
      const row = new Array(n);
      for (let i = 0; i < n; i++) row[i] = f(data[offset + i]);
      return row;
    }
    const stride = shape.slice(dim + 1).reduce((x, y) => x * y, 1);
    const out = new Array(n);
    for (let i = 0; i < n; i++) out[i] = build(dim + 1, offset + i * stride);
    return out;
  }
  if (shape.length === 0) return f(data[0]);
  return build(0, 0);
}

/** Decode a wire array straight to nested arrays. */
export function wireToNested(arr, map) {
  return toNested(decodeArray(arr), map);
}

export const nonFiniteToNull = (v) => (Number.isFinite(v) ? v : null);

/** Slice [i] off the first axis of a decoded array. */
export function sliceFirst(a, i) {
  const stride = a.shape.slice(1).reduce((x, y) => x * y, 1);
  return { shape: a.shape.slice(1), data: a.data.subarray(i * stride, (i + 1) * stride) };
}

// ---------------------------------------------------------------------------------------------
// API

export class ApiError extends Error {
  constructor(status, error, detail) {
    super(detail || error || `HTTP ${status}`);
    this.status = status;
    this.error = error;
    this.detail = detail;
  }
}

/** GET or POST JSON; a 4xx/5xx becomes an ApiError whose message is the server's `detail`. */
export async function api(path, body) {
  const init = body === undefined
    ? { method: "GET", headers: { Accept: "application/json" } }
    : { method: "POST", headers: { "Content-Type": "application/json", Accept: "application/json" }, body: JSON.stringify(body) };
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, "network", t("Could not reach the glassbox server. Is it still running?"));
  }
  let payload = null;
  try {
    payload = await res.json();
  } catch (e) {
    payload = null;
  }
  if (!res.ok) {
    const detail = payload && (payload.detail || payload.error);
    throw new ApiError(res.status, payload && payload.error, typeof detail === "string" ? detail : t("The server answered {status}.", { status: res.status }));
  }
  return payload;
}

// ---------------------------------------------------------------------------------------------
// UI state: one object per page, mirrored in the URL query string (so reload restores the view)

/**
 * Read the page state from the URL. Each key of `defaults` is looked up; numbers are parsed as
 * numbers (falling back to the default when not a finite number), strings taken as they are.
 */
export function readState(defaults) {
  const params = new URLSearchParams(window.location.search);
  const state = { ...defaults };
  for (const [key, def] of Object.entries(defaults)) {
    if (!params.has(key)) continue;
    const raw = params.get(key);
    if (typeof def === "number" || def === null) {
      const n = Number(raw);
      if (raw !== "" && Number.isFinite(n)) state[key] = n;
    } else {
      state[key] = raw;
    }
  }
  return state;
}

// The lesson panel's keys (static/js/lesson.js, app/lessons.py): a page rewriting its own state keeps
// them, so the URL stays the whole view (a reload or a presenter room stays in the lesson).
export const LESSON_KEYS = ["lesson", "lstep", "example"];
// The theme (static/js/theme.js) is kept the same way, so a shared link shows the page as it was shown.
export const THEME_KEY = "theme";

/** Write the state to the URL with history.replaceState (no reload, no new history entry). */
export function writeState(state) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(state)) {
    if (value === null || value === undefined || value === "") continue;
    params.set(key, String(value));
  }
  const current = new URLSearchParams(window.location.search);
  if (current.has(LANG_KEY) && !params.has(LANG_KEY)) params.set(LANG_KEY, current.get(LANG_KEY)); // the language too
  for (const key of [...LESSON_KEYS, THEME_KEY]) if (current.has(key) && !params.has(key)) params.set(key, current.get(key));
  const url = `${window.location.pathname}?${params.toString()}`;
  window.history.replaceState(null, "", url);
}

/** A URL of another page with the given state (and this page's theme). */
export function pageUrl(path, state) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(state)) {
    if (value !== null && value !== undefined && value !== "") params.set(key, String(value));
  }
  const theme = new URLSearchParams(window.location.search).get(THEME_KEY);
  if (theme && !params.has(THEME_KEY)) params.set(THEME_KEY, theme);
  const lang = new URLSearchParams(window.location.search).get(LANG_KEY);
  if (lang && !params.has(LANG_KEY)) params.set(LANG_KEY, lang); // a link to another page keeps the language
  return `${path}?${params.toString()}`;
}

// ---------------------------------------------------------------------------------------------
// Status line, error box, requests of a page

const $ = (id) => document.getElementById(id);
export { $ };

/** A gallery picture's caption in the page's language: a scene's caption is the model's input
 * text (data, kept as it is); a sample photo's is interface. */
export function pictureCaption(it) {
  return it.kind === "photo" ? t("scikit-image sample photo “{name}”", { name: it.name }) : it.caption;
}

export function showError(message) {
  const box = $("error");
  if (!box) return;
  box.textContent = message;
  box.hidden = false;
}

export function clearError() {
  const box = $("error");
  if (!box) return;
  box.textContent = "";
  box.hidden = true;
}

/** Show "Running…" (or another message) while waiting; busy(false) clears it. */
export function busy(on, message = t("Running…")) {
  const s = $("status");
  if (s) {
    s.textContent = on ? message : "";
    s.classList.toggle("active", !!on);
  }
  document.body.classList.toggle("is-busy", !!on);
  const run = $("run");
  if (run) run.disabled = !!on;
}

/** Run an async action with the busy line and the error box handled; returns its result or null. */
export async function guarded(action, message) {
  clearError();
  busy(true, message);
  try {
    return await action();
  } catch (e) {
    showError(e instanceof ApiError ? e.message : t("Something went wrong in the page: {message}", { message: e.message }));
    if (!(e instanceof ApiError)) console.warn(e); // a bug in the page; the user sees the box
    return null;
  } finally {
    busy(false);
  }
}

/**
 * Numbers a page's requests so an answer is dropped when a newer request started meanwhile (the
 * user changed the text or the head while it ran). start() numbers one; isStale(n) checks it.
 */
export function latestOnly() {
  let n = 0;
  return { start: () => ++n, current: () => n, isStale: (my) => my !== n };
}

/**
 * The run() of a one-text page: read #text and #model into state, then under guarded() POST the
 * text (and `extra`) to `path` and pass the answer to `onAnswer(answer, my)` unless it is stale.
 */
export async function runText(state, seq, path, onAnswer, extra) {
  state.text = $("text").value;
  state.model = $("model").value || state.model;
  const my = seq.start();
  await guarded(async () => {
    const r = await api(path, textBody(state, extra));
    if (seq.isStale(my)) return;
    await onAnswer(r, my);
    setTraceExport("/api/text/export", textBody(state));
  });
}

// ---------------------------------------------------------------------------------------------
// Tokens

/** A token's text made visible: newlines and tabs as symbols, a bare space as ␣. */
export function showToken(text) {
  const t = text.replace(/\n/g, "↵").replace(/\t/g, "⇥");
  return t.trim() === "" ? t.replace(/ /g, "␣") || "∅" : t.trim();
}

/** Unique labels for an axis: the position, a middle dot, the token ("3·the"). */
export function tokenLabels(tokens) {
  return tokens.map((t, i) => `${i}·${showToken(t.text)}`);
}

/** Plotly renders a small HTML subset in labels; escape so a token like "<b>" shows literally. */
export function plotlyText(s) {
  return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

/**
 * Render tokens as chips into `container` (cleared first). `selected`: index to highlight;
 * `onSelect(i)`: if given, chips are buttons that select a token.
 */
export function renderChips(container, tokens, { selected = null, onSelect = null } = {}) {
  container.replaceChildren();
  tokens.forEach((tok, i) => {
    const chip = document.createElement(onSelect ? "button" : "span");
    chip.className = "token";
    if (onSelect) chip.type = "button";
    if (i === selected) chip.classList.add("selected");
    chip.dataset.pos = String(i);
    chip.title = t("position {i}, token id {id}", { i, id: tok.id });
    const pos = document.createElement("span");
    pos.className = "pos";
    pos.textContent = String(i);
    const txt = document.createElement("span");
    txt.className = "txt";
    txt.textContent = tok.text; // literal, spaces kept (CSS white-space: pre)
    txt.translate = false; // a token is data: no translator in the browser should touch it
    chip.append(pos, txt);
    if (onSelect) chip.addEventListener("click", () => onSelect(i));
    container.append(chip);
  });
}

/** Index of the first token whose text (trimmed, lower case) is `word`, or -1. */
export function findToken(tokens, word) {
  const w = word.trim().toLowerCase();
  return tokens.findIndex((t) => t.text.trim().toLowerCase() === w);
}

/** The query a page follows for a new text: the first "it" (the classic example), else the last token. */
export function defaultQuery(tokens) {
  const it = findToken(tokens, "it");
  return it >= 0 ? it : tokens.length - 1;
}

// ---------------------------------------------------------------------------------------------
// Selects and the text form

/** Fill a <select> with 0..n-1 and choose `value` (clamped). Returns the chosen value. */
export function fillSelect(select, n, value) {
  const v = Math.min(Math.max(0, value | 0), Math.max(0, n - 1));
  if (select.options.length !== n) {
    select.replaceChildren();
    for (let i = 0; i < n; i++) {
      const o = document.createElement("option");
      o.value = String(i);
      o.textContent = String(i);
      select.append(o);
    }
  }
  select.value = String(v);
  return v;
}

/** Fill the #layer and #head selects for the model's size; state.layer and state.head are clamped to it. */
export function fillLayerHead(state, shape) {
  state.layer = fillSelect($("layer"), shape.n_layers, state.layer);
  state.head = fillSelect($("head"), shape.n_heads, state.head);
}

/** Wire the #layer and #head selects: a change stores the number in state and runs load() under guarded(). */
export function onLayerHeadChange(state, load) {
  for (const id of ["layer", "head"]) {
    $(id).addEventListener("change", () => {
      state[id] = Number($(id).value);
      guarded(() => load());
    });
  }
}

/** Wire the text form: submitting (Run button or Enter) calls onRun(text). */
export function onRunForm(onRun) {
  const form = $("run-form");
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    onRun();
  });
  // A textarea submits on Enter (Shift+Enter for a new line) and grows with its text.
  form.querySelectorAll("textarea").forEach((ta) => {
    ta.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
        ev.preventDefault();
        form.requestSubmit();
      }
    });
    ta.addEventListener("input", () => autoGrow(ta));
    requestAnimationFrame(() => autoGrow(ta));
  });
}

/** Fit a textarea's height to its text (call after setting .value from code). */
export function autoGrow(ta) {
  ta.style.height = "auto";
  ta.style.height = `${ta.scrollHeight + 2}px`;
}

/** The served models of a family ("text", "vision"), for an optional <select id="model"> (hidden
 * when only one is served). */
export async function initModelSelect(state, family = "text") {
  const sel = $("model");
  if (!sel) return;
  let models = [];
  try {
    models = (await api("/api/models"))[family] || [];
  } catch (e) {
    return;
  }
  sel.replaceChildren();
  for (const m of models) {
    const o = document.createElement("option");
    o.value = m.name;
    o.textContent = t("{name} ({layers} layers × {heads} heads)", { name: m.name, layers: m.n_layers, heads: m.n_heads });
    sel.append(o);
  }
  if (state.model && models.some((m) => m.name === state.model)) sel.value = state.model;
  else state.model = models.length ? models[0].name : "";
  const wrap = sel.closest(".field");
  if (wrap) wrap.hidden = models.length < 2;
}

/** The request body fields every text endpoint takes. */
export function textBody(state, extra = {}) {
  const body = { text: state.text, ...extra };
  if (state.model) body.model = state.model;
  return body;
}

// ---------------------------------------------------------------------------------------------
// Export: every figure as PNG or SVG, every picture as PNG, the trace on screen as .npz

/** A file name that says what the file shows, from the page and its address: glassbox-attention-heatmap-L2H1. */
export function exportName(what) {
  const q = new URLSearchParams(window.location.search);
  const tag = (key, prefix) => {
    const v = q.get(key);
    return v && !v.startsWith("-") ? `${prefix}${v}` : ""; // -1 means "none chosen"
  };
  const parts = [
    "glassbox", document.body.dataset.view, what, tag("layer", "L") + tag("head", "H"), tag("image", ""),
    tag("patch", "patch"), tag("source", "from"), tag("scene", "scene"), tag("t", "t"), tag("seed", "seed"), tag("step", "step"),
  ];
  return parts.map((p) => String(p || "").replace(/[^A-Za-z0-9.]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 40)).filter(Boolean).join("-");
}

/** Save a Blob as a file: a download link clicked (no new window; allowed by the CSP). */
export function saveBlob(blob, name) {
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  a.hidden = true;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000); // the browser reads it after this returns
}

/** A Plotly figure as PNG (twice its size on screen: sharp on a slide) or SVG (for print and editing). */
export function downloadFigure(gd, format) {
  const title = gd.layout && gd.layout.title;
  const what = gd.id || (title && (title.text || title)) || "figure";
  return Plotly.downloadImage(gd, { format, filename: exportName(String(what)), scale: format === "png" ? 2 : 1 });
}

// Modebar icons that say what they save (an icon alone does not tell PNG from SVG); sized in style.css.
const formatIcon = (label) => ({
  svg: `<svg xmlns="http://www.w3.org/2000/svg" class="export-icon" viewBox="0 0 34 16"><text x="17" y="12.5" text-anchor="middle" font-size="12" font-weight="700" font-family="system-ui, sans-serif">${label}</text></svg>`,
});
const FIGURE_DOWNLOADS = [
  { name: "glassbox-png", title: t("Download this figure as PNG"), icon: formatIcon("PNG"), click: (gd) => downloadFigure(gd, "png") },
  { name: "glassbox-svg", title: t("Download this figure as SVG"), icon: formatIcon("SVG"), click: (gd) => downloadFigure(gd, "svg") },
];

/** data: URL -> Blob, decoded here (the CSP's connect-src does not let fetch() read data: URLs). */
function dataUrlBlob(url) {
  const m = /^data:([^;,]+)(;base64)?,(.*)$/s.exec(url);
  if (!m) throw new Error("not a data: URL");
  const bytes = m[2] ? base64ToBytes(m[3]) : new TextEncoder().encode(decodeURIComponent(m[3]));
  return new Blob([bytes], { type: m[1] });
}

/** A "Download PNG" button under each picture of the page (<figure> <img class="pixel-img">), saving what it shows. */
function addPictureDownloads() {
  for (const img of document.querySelectorAll("figure img.pixel-img")) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "picture-download";
    button.textContent = t("Download PNG");
    button.title = t("Save this picture as a PNG file");
    button.disabled = !img.getAttribute("src");
    img.addEventListener("load", () => { button.disabled = false; });
    button.addEventListener("click", () => saveBlob(dataUrlBlob(img.src), `${exportName(img.id || "picture")}.png`));
    img.after(button);
  }
}

// "Download trace (.npz)" buttons (class trace-download): each is armed by its page with the request
// for the trace it shows; app/routes/export.py answers with the file.
const traceExports = new Map(); // button id -> {path, body}

/** Arm the button `id` to download the trace POST `path` `body` exports; path null disarms it (nothing shown yet). */
export function setTraceExport(path, body, id = "download-trace") {
  const button = $(id);
  if (!button) return;
  if (path) traceExports.set(id, { path, body });
  else traceExports.delete(id);
  button.disabled = !path;
}

async function downloadTrace(id) {
  const req = traceExports.get(id);
  if (!req) return;
  await guarded(async () => {
    let res;
    try {
      res = await fetch(req.path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(req.body) });
    } catch (e) {
      throw new ApiError(0, "network", t("Could not reach the glassbox server. Is it still running?"));
    }
    if (!res.ok) {
      const payload = await res.json().catch(() => null);
      throw new ApiError(res.status, payload && payload.error, (payload && payload.detail) || t("The server answered {status}.", { status: res.status }));
    }
    const name = /filename="([^"]+)"/.exec(res.headers.get("Content-Disposition") || "");
    saveBlob(await res.blob(), name ? name[1] : `${exportName("trace")}.npz`);
  }, t("Preparing the trace file…"));
}

// Every explorer page gets its picture and trace downloads here, without wiring them itself.
if (document.body && document.body.dataset.view) {
  document.querySelectorAll("button.trace-download").forEach((b) => b.addEventListener("click", () => downloadTrace(b.id)));
  addPictureDownloads();
}

// ---------------------------------------------------------------------------------------------
// Plotly helpers

export const PLOT_CONFIG = {
  displaylogo: false,
  responsive: true,
  displayModeBar: true, // always shown, not on hover only: the downloads must be seen to be found
  // Plotly's own camera (toImage) saves PNG under one fixed name: FIGURE_DOWNLOADS name the view, and add SVG.
  modeBarButtonsToRemove: ["select2d", "lasso2d", "autoScale2d", "toggleSpikelines", "toImage"],
  modeBarButtonsToAdd: FIGURE_DOWNLOADS,
  // Plotly's own words (its modebar's buttons, its notices) from our catalogue, as a Plotly locale.
  ...(LANG === "en" ? {} : { locale: LANG, locales: { [LANG]: { dictionary: plotlyWords() } } }),
};

/** Plotly's English strings that its modebar and notices show -> the page's language. */
function plotlyWords() {
  return Object.fromEntries([
    ["Zoom", t("Zoom")], ["Pan", t("Pan")], ["Zoom in", t("Zoom in")], ["Zoom out", t("Zoom out")],
    ["Reset axes", t("Reset axes")], ["Reset view", t("Reset view")], ["Autoscale", t("Autoscale")],
    ["Show closest data on hover", t("Show closest data on hover")], ["Compare data on hover", t("Compare data on hover")],
    ["Toggle show closest data on hover", t("Toggle show closest data on hover")],
    ["Share chart...", t("Share chart...")], ["Double-click to zoom back out", t("Double-click to zoom back out")],
  ]);
}

export const FONT = { family: "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif", size: 13, color: "#1f2933" };

// Colour: colour-blind-safe scales only (tests/test_colour_scales.py holds every script to them).

/** Sequential values (attention, probability, rollout): Viridis, ordered in lightness for every common colour-vision deficiency. */
export const SEQUENTIAL = "Viridis";

/**
 * Signed values (weights, embeddings, noise, cosine similarity): ColorBrewer's RdBu, marked
 * colour-blind safe by its authors (Harrower & Brewer 2003); blue below zero, near white at zero,
 * red above. Use it with zmin = -zmax so that zero is the middle.
 */
export const DIVERGING = [
  [0, "#053061"], [0.1, "#2166ac"], [0.2, "#4393c3"], [0.3, "#92c5de"], [0.4, "#d1e5f0"], [0.5, "#f7f7f7"],
  [0.6, "#fddbc7"], [0.7, "#f4a582"], [0.8, "#d6604d"], [0.9, "#b2182b"], [1, "#67001f"],
];

/** Categories (heads, runs): Okabe & Ito's palette, made to be told apart with any colour-vision deficiency. */
export const CATEGORICAL = ["#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#000000"];

/**
 * What the page follows (a query's row, a patch, a layer): magenta, the one hue that Viridis, RdBu
 * and CATEGORICAL's blue all lack, so the outline stands out on either scale in any colour vision.
 */
export const MARK = "#e600e6";

/** The outline of bars and points; a dark theme draws it light. */
export const OUTLINE = "#444c56";

export function baseLayout(extra = {}) {
  return {
    font: FONT,
    paper_bgcolor: "rgba(0,0,0,0)",
    plot_bgcolor: "#f4f6f8",
    margin: { l: 90, r: 20, t: 30, b: 90 },
    hoverlabel: { font: { family: FONT.family, size: 13 } },
    ...extra,
  };
}

/**
 * A heatmap trace of a [rows, cols] matrix (nested, nulls allowed). rowLabels/colLabels: axis
 * labels (already unique); valueName: what a cell is ("attention"). Masked (null) cells hover "masked".
 * `signed`: values of either sign (weights, activations): DIVERGING, centred on zero.
 */
export function heatmapTrace(z, { rowLabels, colLabels, rowName = t("row"), colName = t("column"), valueName = t("value"), digits = 3, zmin, zmax, colorbar = true, nullText = t("masked"), signed = false } = {}) {
  const text = z.map((row, i) =>
    row.map((v, j) => {
      const r = rowLabels ? rowLabels[i] : i;
      const c = colLabels ? colLabels[j] : j;
      const val = v === null || v === undefined ? nullText : fmt(v, digits);
      return plotlyText(`${rowName} ${r}<br>${colName} ${c}<br>${valueName}: ${val}`).replace(/&lt;br&gt;/g, "<br>");
    }),
  );
  const trace = {
    type: "heatmap",
    z,
    text,
    hoverinfo: "text",
    colorscale: SEQUENTIAL,
    hoverongaps: true,
    xgap: 0,
    ygap: 0,
    showscale: colorbar,
    colorbar: { thickness: 12, outlinewidth: 0, len: 0.9 },
  };
  if (signed) {
    let lim = 1e-6;
    for (const row of z) for (const v of row) if (Number.isFinite(v) && Math.abs(v) > lim) lim = Math.abs(v);
    Object.assign(trace, { colorscale: DIVERGING, zmin: -lim, zmax: lim });
  }
  if (zmin !== undefined) trace.zmin = zmin;
  if (zmax !== undefined) trace.zmax = zmax;
  return trace;
}

// ---------------------------------------------------------------------------------------------
// Figures in the page's theme (static/js/theme.js puts it on <html> before anything is drawn)

/** The theme to draw in: projector (large type, thick lines) and dark, as theme.js set them. */
export function currentTheme() {
  const c = document.documentElement.classList;
  return { projector: c.contains("theme-projector"), dark: c.contains("theme-dark") };
}

// The ink of a figure: text, the plot area's ground, grid lines, outlines. The projector's is starker.
const INK = {
  light: { fg: FONT.color, muted: "#52606d", plot: "#f4f6f8", grid: "#e4e7eb", outline: OUTLINE },
  dark: { fg: "#e6eaef", muted: "#a9b4c0", plot: "#1f2630", grid: "#3a4653", outline: "#c9d1d9" },
  "projector-light": { fg: "#000000", muted: "#27313c", plot: "#f4f6f8", grid: "#b9c3cd", outline: "#000000" },
  "projector-dark": { fg: "#ffffff", muted: "#dbe2e9", plot: "#161b22", grid: "#5b6875", outline: "#ffffff" },
};
const PROJECTOR_TYPE = 1.5; // type 1.5× as large on a projector ...
const PROJECTOR_LINE = 2; // ... and lines twice as thick

/**
 * The figure (data, layout) as the theme draws it: every font size × the type scale and in the
 * theme's ink, line widths × the line scale, margins grown with the type, the theme's grid and
 * ground, categories in CATEGORICAL. The inputs are left as they are (copies are changed).
 */
export function themeFigure(data, layout, theme = currentTheme()) {
  const key = `${theme.projector ? "projector-" : ""}${theme.dark ? "dark" : "light"}`;
  const ink = INK[key];
  const fx = { ink, type: theme.projector ? PROJECTOR_TYPE : 1, line: theme.projector ? PROJECTOR_LINE : 1 };
  const l = themed(layout, "", fx);
  l.font = { ...FONT, size: FONT.size * fx.type, ...l.font, color: ink.fg };
  if (l.plot_bgcolor !== "rgba(0,0,0,0)") l.plot_bgcolor = ink.plot;
  const axis = {
    gridcolor: ink.grid, zerolinecolor: ink.grid, linecolor: ink.muted, tickcolor: ink.muted,
    gridwidth: fx.line, zerolinewidth: fx.line, linewidth: fx.line, tickwidth: fx.line,
  };
  l.template = { layout: { xaxis: axis, yaxis: axis } }; // a template reaches every x and y axis of a grid
  l.colorway = l.colorway || CATEGORICAL.map((c) => (c === "#000000" ? ink.fg : c));
  l.modebar = { bgcolor: "rgba(0,0,0,0)", color: ink.muted, activecolor: ink.fg, ...l.modebar };
  return [data.map((t) => themeTrace(t, fx)), l];
}

/** A copy of a layout (or part of one) with fonts, lines, margins and grids in the theme. */
function themed(o, key, fx) {
  if (Array.isArray(o)) return o.map((v) => themed(v, key, fx));
  if (!o || typeof o !== "object") return o;
  const out = {};
  for (const [k, v] of Object.entries(o)) out[k] = themed(v, k, fx);
  if (/font$/.test(key)) {
    if (typeof out.size === "number") out.size = Math.round(out.size * fx.type);
    if (out.color === FONT.color) out.color = fx.ink.fg;
  }
  if (key === "line" && typeof out.width === "number") out.width *= fx.line;
  if (key === "line" && out.color === OUTLINE) out.color = fx.ink.outline;
  if (key === "margin") for (const side of ["l", "r", "t", "b"]) if (typeof out[side] === "number") out[side] = Math.round(out[side] * fx.type);
  if (key === "colorbar" && typeof out.thickness === "number") out.thickness = Math.round(out.thickness * fx.type);
  if ("gridcolor" in out) out.gridcolor = fx.ink.grid;
  return out;
}

/** A trace in the theme: its own fonts, colour bar, outlines, point sizes and line widths (never its data). */
function themeTrace(t, fx) {
  const out = { ...t };
  for (const k of ["textfont", "insidetextfont", "outsidetextfont", "colorbar", "hoverlabel", "line"]) {
    if (t[k]) out[k] = themed(t[k], k, fx);
  }
  if (t.marker) {
    out.marker = { ...t.marker };
    if (t.marker.line) out.marker.line = themed(t.marker.line, "line", fx);
    if (t.marker.colorbar) out.marker.colorbar = themed(t.marker.colorbar, "colorbar", fx);
    const size = t.marker.size;
    if (typeof size === "number") out.marker.size = size * fx.type;
    else if (Array.isArray(size)) out.marker.size = size.map((v) => v * fx.type);
  }
  if (!t.line && t.type === "scatter" && String(t.mode || "lines").includes("lines") && fx.line !== 1) out.line = { width: 2 * fx.line };
  return out;
}

/**
 * Draw a figure into `gd` (Plotly.react) in the page's theme. The figure is kept as given, so a
 * change of theme draws it again from the same data and layout.
 */
export function plot(gd, data, layout, config = PLOT_CONFIG) {
  gd.glassboxFigure = { data, layout, config };
  const [d, l] = themeFigure(data, layout);
  return Plotly.react(gd, d, l, config);
}

// theme.js says when the theme changes: every figure on the page is drawn again in it, at the
// size its box now has (the projector's boxes are taller).
document.addEventListener("glassbox:theme", () => {
  document.querySelectorAll(".js-plotly-plot").forEach((gd) => {
    const f = gd.glassboxFigure;
    if (f) plot(gd, f.data, f.layout, f.config).then(() => Plotly.Plots.resize(gd));
  });
});

/**
 * Plotly.react, and on the first draw into `gd` wire a click on a data point to onPoint(point).
 * Wired once (react keeps listeners), so onPoint must read current data from module state or gd.
 */
export function reactWithClick(gd, data, layout, onPoint) {
  return plot(gd, data, layout).then(() => {
    if (!gd.dataset.wired) {
      gd.dataset.wired = "1";
      gd.on("plotly_click", (ev) => {
        const p = ev && ev.points && ev.points[0];
        if (p) onPoint(p);
      });
    }
  });
}

/** Axis with one tick per category, labelled (escaped) with `labels`. */
export function labelAxis(labels, extra = {}) {
  const n = labels.length;
  return {
    tickmode: "array",
    tickvals: labels.map((_, i) => i),
    ticktext: labels.map(plotlyText),
    automargin: true,
    showgrid: false,
    zeroline: false,
    tickfont: { size: n > 40 ? 9 : n > 24 ? 11 : 13 },
    ...extra,
  };
}

/**
 * Horizontal bars, one per row, of values in [0, 1] (attention, probability): Viridis-coloured,
 * a percentage at each bar's end. `hovertext`: one already-escaped string per bar (plotlyText).
 */
export function probabilityBars(values, hovertext) {
  return {
    type: "bar",
    orientation: "h",
    x: values,
    y: values.map((_, j) => j),
    marker: { color: values, colorscale: SEQUENTIAL, cmin: 0, cmax: 1, line: { color: OUTLINE, width: 0.5 } },
    text: values.map((v) => pct(v)),
    textposition: "outside",
    textfont: { color: FONT.color },
    cliponaxis: false,
    hovertext,
    hoverinfo: "text",
  };
}

/** A number for people: a few significant digits. */
export function fmt(v, digits = 3) {
  if (v === null || v === undefined) return "–";
  if (!Number.isFinite(v)) return v > 0 ? "∞" : v < 0 ? "−∞" : "NaN";
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1000 || a < 0.001) return v.toExponential(2);
  return Number(v.toPrecision(digits)).toString();
}

export function pct(p) {
  if (p >= 0.995) return `${(p * 100).toFixed(0)}%`;
  if (p >= 0.01) return `${(p * 100).toFixed(1)}%`;
  return `${(p * 100).toFixed(2)}%`;
}

// Viridis, 11 stops (matplotlib), for HTML cells shaded by a value in [0, 1].
const VIRIDIS = [
  [68, 1, 84], [72, 35, 116], [64, 67, 135], [52, 94, 141], [41, 120, 142], [32, 144, 140],
  [34, 167, 132], [68, 190, 112], [121, 209, 81], [189, 222, 38], [253, 231, 37],
];

/** [r, g, b] of Viridis at t in [0, 1]. */
export function viridis(t) {
  const x = Math.min(1, Math.max(0, Number.isFinite(t) ? t : 0)) * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(x));
  const f = x - i;
  return VIRIDIS[i].map((c, k) => Math.round(c + f * (VIRIDIS[i + 1][k] - c)));
}

/** CSS background and a readable text colour for a value in [0, 1]. */
export function viridisCss(t) {
  const [r, g, b] = viridis(t);
  const light = 0.299 * r + 0.587 * g + 0.114 * b > 140;
  return { background: `rgb(${r}, ${g}, ${b})`, color: light ? "#111" : "#fff" };
}

// ---------------------------------------------------------------------------------------------
// Keys: the same keys on every page, registered by the page with keys({...}). ←/→ step (layers,
// steps, timesteps), ↑/↓ heads, Space plays, ? lists them. A key works the page's own controls
// (stepSelect, stepRange fire the control's event), so the controls, the view and the URL agree.

/**
 * @typedef {{does: string, run: () => any}} KeyAction   `does`: what the key does, for the list
 * @typedef {{left?: KeyAction, right?: KeyAction, up?: KeyAction, down?: KeyAction, space?: KeyAction,
 *   enter?: KeyAction}} PageKeys
 */

const KEY_NAMES = { ArrowLeft: "left", ArrowRight: "right", ArrowUp: "up", ArrowDown: "down", " ": "space", Enter: "enter" };
const KEY_LABELS = [["left", "←"], ["right", "→"], ["up", "↑"], ["down", "↓"], ["space", t("Space")], ["enter", "Enter"]];
/** @type {PageKeys} */
let pageKeys = {};

/** Register the page's keys (a later call replaces them). Without it a page still has ? and Tab. */
export function keys(map = {}) {
  pageKeys = map;
}

// Every page that loads this module has the keys and the header's Keys button (module scripts run
// once the document is parsed, so the button is there).
document.addEventListener("keydown", onKey);
document.getElementById("keys-help-button")?.addEventListener("click", showKeys);

/** Where keys belong to the field: typing, or choosing in a list (a select's arrows), or a slider's. */
function typingIn(el) {
  return !!(el && el.closest && el.closest("input, textarea, select, [contenteditable]:not([contenteditable='false'])"));
}

/** Where Enter and Space press the focused thing (a button, a link, a token chip). */
function pressable(el) {
  return !!(el && el.closest && el.closest("button, a[href], summary, [role='button'], [tabindex]:not([tabindex='-1'])"));
}

function onKey(ev) {
  if (ev.defaultPrevented || ev.altKey || ev.ctrlKey || ev.metaKey || ev.isComposing) return;
  if (document.querySelector("dialog[open]")) return; // a dialog has the keys (Esc closes it)
  if (typingIn(ev.target)) return;
  if (ev.key === "?") {
    ev.preventDefault();
    showKeys();
    return;
  }
  const name = KEY_NAMES[ev.key];
  const action = name && pageKeys[name];
  if (!action) return;
  if ((name === "space" || name === "enter") && (ev.repeat || pressable(ev.target))) return;
  ev.preventDefault(); // the arrows and Space would scroll the page
  action.run();
}

/** The list of this page's keys in a modal dialog: focus stays inside; Esc or Close returns it. */
function showKeys() {
  if (document.querySelector("dialog.keys-help")) return;
  const back = document.activeElement;
  const dialog = document.createElement("dialog");
  dialog.className = "keys-help";
  dialog.setAttribute("aria-labelledby", "keys-help-title");
  const title = document.createElement("h2");
  title.id = "keys-help-title";
  title.textContent = t("Keys on this page");
  const table = document.createElement("table");
  table.className = "keys";
  const row = (labels, does) => {
    const tr = document.createElement("tr");
    const th = document.createElement("th");
    th.scope = "row";
    labels.forEach((label, i) => {
      if (i) th.append(" ");
      const k = document.createElement("kbd");
      k.textContent = label;
      th.append(k);
    });
    const td = document.createElement("td");
    td.textContent = does;
    tr.append(th, td);
    table.append(tr);
  };
  for (const [name, label] of KEY_LABELS) if (pageKeys[name]) row([label], pageKeys[name].does);
  row(["Tab", "Shift+Tab"], t("move between the buttons, lists, tokens and links"));
  row(["Enter", t("Space")], t("press the focused button, or choose the focused token"));
  row(["?"], t("this list"));
  row(["Esc"], t("close it"));
  const note = document.createElement("p");
  note.className = "hint";
  note.textContent = t("The keys do nothing while you type in a text box or choose in a list; press Tab to leave it.");
  const form = document.createElement("form");
  form.method = "dialog"; // submitting closes the dialog, no request
  const close = document.createElement("button");
  close.type = "submit";
  close.className = "primary";
  close.textContent = t("Close");
  form.append(close);
  dialog.append(title, table, note, form);
  dialog.addEventListener("keydown", keepFocusIn);
  dialog.addEventListener("close", () => {
    dialog.remove();
    if (back && back !== document.body && back.isConnected && back.focus) back.focus();
  });
  document.body.append(dialog);
  dialog.showModal(); // the rest of the page is inert while it is open
  close.focus();
}

/** Tab and Shift+Tab go round the dialog's own controls, never out to the browser. */
function keepFocusIn(ev) {
  if (ev.key !== "Tab") return;
  const focusable = [...ev.currentTarget.querySelectorAll("button, a[href], input, select, textarea, [tabindex]:not([tabindex='-1'])")]
    .filter((el) => !el.disabled);
  if (!focusable.length) return;
  const first = focusable[0];
  const last = focusable[focusable.length - 1];
  const inside = ev.currentTarget.contains(document.activeElement);
  if (!inside || (ev.shiftKey ? document.activeElement === first : document.activeElement === last)) {
    ev.preventDefault();
    (ev.shiftKey ? last : first).focus();
  }
}

/** Move a <select> `delta` options along (clamped) and fire its change event, as a choice would. */
export function stepSelect(select, delta) {
  if (!select || select.disabled || !select.options.length) return false;
  const i = Math.min(Math.max(0, select.selectedIndex + delta), select.options.length - 1);
  if (i === select.selectedIndex) return false;
  select.selectedIndex = i;
  select.dispatchEvent(new Event("change", { bubbles: true }));
  return true;
}

/** Move a range input `delta` steps (clamped to its min and max) and fire its input event, as a drag would. */
export function stepRange(input, delta) {
  if (!input || input.disabled || !delta) return false;
  const before = input.value;
  if (delta > 0) input.stepUp(delta);
  else input.stepDown(-delta);
  if (input.value === before) return false;
  input.dispatchEvent(new Event("input", { bubbles: true }));
  return true;
}

/** ←/→ the #layer select, ↑/↓ the #head select: the keys of a page that shows one layer and head. */
export function layerHeadKeys() {
  return {
    left: { does: t("previous layer"), run: () => stepSelect($("layer"), -1) },
    right: { does: t("next layer"), run: () => stepSelect($("layer"), 1) },
    up: { does: t("previous head"), run: () => stepSelect($("head"), -1) },
    down: { does: t("next head"), run: () => stepSelect($("head"), 1) },
  };
}
