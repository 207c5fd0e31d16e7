// Shared by every page: the wire decoder, the JSON API client, UI state in the URL, the error box,
// token chips and Plotly helpers. Anything a user typed or a token's text reaches the DOM through
// textContent only (never innerHTML), and Plotly labels are entity-escaped (see plotlyText).

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
    throw new ApiError(0, "network", "Could not reach the glassbox server. Is it still running?");
  }
  let payload = null;
  try {
    payload = await res.json();
  } catch (e) {
    payload = null;
  }
  if (!res.ok) {
    const detail = payload && (payload.detail || payload.error);
    throw new ApiError(res.status, payload && payload.error, typeof detail === "string" ? detail : `The server answered ${res.status}.`);
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

/** Write the state to the URL with history.replaceState (no reload, no new history entry). */
export function writeState(state) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(state)) {
    if (value === null || value === undefined || value === "") continue;
    params.set(key, String(value));
  }
  const current = new URLSearchParams(window.location.search);
  for (const key of LESSON_KEYS) if (current.has(key) && !params.has(key)) params.set(key, current.get(key));
  const url = `${window.location.pathname}?${params.toString()}`;
  window.history.replaceState(null, "", url);
}

/** A URL of another page with the given state. */
export function pageUrl(path, state) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(state)) {
    if (value !== null && value !== undefined && value !== "") params.set(key, String(value));
  }
  return `${path}?${params.toString()}`;
}

// ---------------------------------------------------------------------------------------------
// Status line, error box, requests of a page

const $ = (id) => document.getElementById(id);
export { $ };

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
export function busy(on, message = "Running…") {
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
    showError(e instanceof ApiError ? e.message : `Something went wrong in the page: ${e.message}`);
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
  tokens.forEach((t, i) => {
    const chip = document.createElement(onSelect ? "button" : "span");
    chip.className = "token";
    if (onSelect) chip.type = "button";
    if (i === selected) chip.classList.add("selected");
    chip.dataset.pos = String(i);
    chip.title = `position ${i}, token id ${t.id}`;
    const pos = document.createElement("span");
    pos.className = "pos";
    pos.textContent = String(i);
    const txt = document.createElement("span");
    txt.className = "txt";
    txt.textContent = t.text; // literal, spaces kept (CSS white-space: pre)
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

/** The served models, for an optional <select id="model"> (hidden when only one is served). */
export async function initModelSelect(state) {
  const sel = $("model");
  if (!sel) return;
  let models = [];
  try {
    models = (await api("/api/models")).text || [];
  } catch (e) {
    return;
  }
  sel.replaceChildren();
  for (const m of models) {
    const o = document.createElement("option");
    o.value = m.name;
    o.textContent = `${m.name} (${m.n_layers} layers × ${m.n_heads} heads)`;
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
// Plotly helpers

export const PLOT_CONFIG = {
  displaylogo: false,
  responsive: true,
  modeBarButtonsToRemove: ["select2d", "lasso2d", "autoScale2d", "toggleSpikelines"],
};

export const FONT = { family: "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif", size: 13, color: "#1f2933" };

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
 */
export function heatmapTrace(z, { rowLabels, colLabels, rowName = "row", colName = "column", valueName = "value", digits = 3, zmin, zmax, colorbar = true, nullText = "masked" } = {}) {
  const text = z.map((row, i) =>
    row.map((v, j) => {
      const r = rowLabels ? rowLabels[i] : i;
      const c = colLabels ? colLabels[j] : j;
      const val = v === null || v === undefined ? nullText : fmt(v, digits);
      return plotlyText(`${rowName} ${r}<br>${colName} ${c}<br>${valueName}: ${val}`).replace(/&lt;br&gt;/g, "<br>");
    }),
  );
  const t = {
    type: "heatmap",
    z,
    text,
    hoverinfo: "text",
    colorscale: "Viridis",
    hoverongaps: true,
    xgap: 0,
    ygap: 0,
    showscale: colorbar,
    colorbar: { thickness: 12, outlinewidth: 0, len: 0.9 },
  };
  if (zmin !== undefined) t.zmin = zmin;
  if (zmax !== undefined) t.zmax = zmax;
  return t;
}

/**
 * Plotly.react, and on the first draw into `gd` wire a click on a data point to onPoint(point).
 * Wired once (react keeps listeners), so onPoint must read current data from module state or gd.
 */
export function reactWithClick(gd, data, layout, onPoint) {
  return Plotly.react(gd, data, layout, PLOT_CONFIG).then(() => {
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
    marker: { color: values, colorscale: "Viridis", cmin: 0, cmax: 1, line: { color: "#555", width: 0.5 } },
    text: values.map((v) => pct(v)),
    textposition: "outside",
    textfont: { color: "#1f2933" },
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
