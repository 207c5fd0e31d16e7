// /text/head: one attention head, step by step, with the model's own numbers.
import {
  $, api, readState, writeState, latestOnly, runText, onRunForm, initModelSelect, textBody, fillLayerHead, onLayerHeadChange,
  tokenLabels, defaultQuery,
  decodeArray, toNested, nonFiniteToNull, heatmapTrace, labelAxis, baseLayout, plot, fmt, pct, keys, stepSelect, t, MARK,
  DEFAULT_TEXT,
} from "./common.js";

const state = readState({ text: DEFAULT_TEXT, model: "", layer: 0, head: 0, q: -1, step: 1 });
let trace = null; // /api/text/trace
let H = null; // decoded /api/text/head: name -> nested arrays
const seq = latestOnly();

const STEPS = [
  { name: "X", title: t("X: the input") },
  { name: "W", title: t("Wq, Wk, Wv: the weights") },
  { name: "Q", title: "Q = X·Wq" },
  { name: "K", title: "K = X·Wk" },
  { name: "V", title: "V = X·Wv" },
  { name: "QK", title: t("Q·Kᵀ: the scores") },
  { name: "scale", title: "÷ √d_head" },
  { name: "mask", title: t("Causal mask") },
  { name: "softmax", title: "Softmax" },
  { name: "Z", title: "·V = Z" },
  { name: "out", title: "Concat · Wo" },
];

async function run() {
  await runText(state, seq, "/api/text/trace", async (r, my) => {
    trace = r;
    fillLayerHead(state, r);
    if (!(state.q >= 0 && state.q < r.tokens.length)) state.q = defaultQuery(r.tokens);
    fillQuery();
    await loadHead(my);
  });
}

function fillQuery() {
  const sel = $("query");
  sel.replaceChildren();
  tokenLabels(trace.tokens).forEach((label, i) => {
    const o = document.createElement("option");
    o.value = String(i);
    o.textContent = label;
    sel.append(o);
  });
  sel.value = String(state.q);
}

async function loadHead(my = seq.start()) {
  const r = await api("/api/text/head", textBody(state, { layer: state.layer, head: state.head }));
  if (seq.isStale(my)) return;
  H = { d_head: r.d_head, tokens: r.tokens };
  for (const key of ["x", "wq", "wk", "wv", "bq", "bk", "bv", "q", "k", "v", "scores", "scaled", "masked", "attention", "z", "wo", "bo", "out"]) {
    if (r[key]) H[key] = toNested(decodeArray(r[key]), key === "masked" ? nonFiniteToNull : undefined);
  }
  writeState(state);
  show();
}

// ---- small linear algebra on nested arrays, to show the arithmetic with the real numbers ----
const dot = (a, b) => a.reduce((s, v, i) => s + v * b[i], 0);
const col = (m, j) => m.map((row) => row[j]);
const argmax = (a) => a.reduce((b, v, i) => (v !== null && (a[b] === null || v > a[b]) ? i : b), 0);
const list = (row, n = 4) => `[${row.slice(0, n).map((v) => fmt(v, 3)).join(", ")}${row.length > n ? ", …" : ""}]`;

function panel(title, z, opts) {
  return { title, z, ...opts };
}

/** The panels and the sentence of step `n` (1-based). */
function stepContent(n) {
  const labels = tokenLabels(trace.tokens);
  const q = state.q;
  const qn = `“${labels[q]}”`;
  const T = labels.length;
  const D = H.x[0].length;
  const dh = H.d_head;
  const att = H.attention[q];
  const j = argmax(att.slice(0, q + 1)); // the key this token attends to most
  const jn = `“${labels[j]}”`;
  const tok = { rowLabels: labels, rowName: t("token") };
  const dims = (name) => ({ colName: name });
  const TT = { rowLabels: labels, colLabels: labels, rowName: t("query"), colName: t("key") };
  const inDim = t("input dim");
  switch (STEPS[n - 1].name) {
    case "X":
      return {
        text: t("X has one row per token ({T} tokens) and {D} columns: every token is a vector of {D} numbers, the " +
          "input of layer {layer} after its LayerNorm. Row {q}, {qn}, begins {row}.", { T, D, layer: state.layer, q, qn, row: list(H.x[q]) }),
        panels: [panel(`X  (${T} × ${D})`, H.x, { ...tok, ...dims(t("dim")), valueName: "x", highlightRow: q })],
      };
    case "W":
      return {
        text: t("Head {head} owns three {D} × {dh} matrices, learned in training and the same for every token: " +
          "Wq makes a query (what the token looks for), Wk a key (what it offers), Wv a value (what it passes on). " +
          "Each shrinks a {D}-number token to {dh} numbers. Wq[0][0] = {w}.", { head: state.head, D, dh, w: fmt(H.wq[0][0]) }),
        panels: [
          panel(`Wq  (${D} × ${dh})`, H.wq, { rowName: inDim, colName: t("query dim"), valueName: "w" }),
          panel(`Wk  (${D} × ${dh})`, H.wk, { rowName: inDim, colName: t("key dim"), valueName: "w" }),
          panel(`Wv  (${D} × ${dh})`, H.wv, { rowName: inDim, colName: t("value dim"), valueName: "w" }),
        ],
      };
    case "Q":
    case "K":
    case "V": {
      const name = STEPS[n - 1].name;
      const lower = name.toLowerCase();
      const M = H[lower];
      const W = H[`w${lower}`];
      const b = H[`b${lower}`] ? H[`b${lower}`][0] : 0;
      const mine = dot(H.x[q], col(W, 0)) + b;
      const role = { Q: t("a query: what this token is looking for"), K: t("a key: what this token offers to queries"), V: t("a value: what this token hands on when it is attended to") }[name];
      return {
        text: t("{name} = X·W{lower} + b{lower} gives every token {role}, {dh} numbers. " +
          "{name}[{q}] ({qn}) = {row}; its first number is X[{q}]·W{lower}[:, 0] + b{lower}[0], " +
          "{D} products summed plus {b} = {mine} (recomputed here; the model's value is {model}).",
        { name, lower, role, dh, q, qn, row: list(M[q]), D, b: fmt(b), mine: fmt(mine), model: fmt(M[q][0]) }),
        panels: [
          panel(`X  (${T} × ${D})`, H.x, { ...tok, ...dims(t("dim")), valueName: "x", highlightRow: q }),
          panel(`${name}  (${T} × ${dh})`, M, { ...tok, ...dims(t("{name} dim", { name: lower })), valueName: lower, highlightRow: q }),
        ],
      };
    }
    case "QK": {
      const mine = dot(H.q[q], H.k[j]);
      return {
        text: t("Each query is compared with every key by a dot product: scores = Q·Kᵀ, a {T} × {T} table. " +
          "{qn} against {jn}: Q[{q}]·K[{j}] = {mine} (the model: {model}). " +
          "A larger score means a better match.", { T, qn, jn, q, j, mine: fmt(mine), model: fmt(H.scores[q][j]) }),
        panels: [
          panel(`Q  (${T} × ${dh})`, H.q, { ...tok, ...dims(t("{name} dim", { name: "q" })), valueName: "q", highlightRow: q }),
          panel(`K  (${T} × ${dh})`, H.k, { ...tok, ...dims(t("{name} dim", { name: "k" })), valueName: "k", highlightRow: j }),
          panel(`Q·Kᵀ  (${T} × ${T})`, H.scores, { ...TT, valueName: t("score"), highlightRow: q, square: true }),
        ],
      };
    }
    case "scale": {
      const root = Math.sqrt(dh);
      return {
        text: t("The scores are divided by √d_head = √{dh} = {root}, so that they do not grow with the " +
          "vector length and the softmax does not saturate: {qn} → {jn}: {score} ÷ {root} = {scaled}.",
        { dh, root: fmt(root, 4), qn, jn, score: fmt(H.scores[q][j]), scaled: fmt(H.scaled[q][j]) }),
        panels: [
          panel("Q·Kᵀ", H.scores, { ...TT, valueName: t("score"), highlightRow: q, square: true }),
          panel(`Q·Kᵀ ÷ √${dh}`, H.scaled, { ...TT, valueName: t("scaled score"), highlightRow: q, square: true }),
        ],
      };
    }
    case "mask":
      return {
        text: t("GPT-2 writes left to right, so a token may not look at the tokens after it: the scores above the " +
          "diagonal become −∞ (blank here; hover says “masked”) and softmax will turn them into 0. " +
          "Row {q}, {qn}, keeps {kept} of its {T} scores.", { q, qn, kept: q + 1, T }),
        panels: [panel(t("masked scores"), H.masked, { ...TT, valueName: t("scaled score"), highlightRow: q, square: true })],
      };
    case "softmax": {
      const row = H.masked[q].slice(0, q + 1);
      const m = Math.max(...row);
      const sum = row.reduce((s, v) => s + Math.exp(v - m), 0);
      const mine = Math.exp(H.masked[q][j] - m) / sum;
      return {
        text: t("Softmax turns each row into probabilities that sum to 1: eˢ / Σ eˢ along the row. {qn} gives " +
          "{p} of its attention to {jn} (e^{score} / Σ over {n} keys = {mine}). " +
          "This is the pattern the attention heatmap shows.", { qn, p: pct(att[j]), jn, score: fmt(H.masked[q][j]), n: q + 1, mine: fmt(mine) }),
        panels: [
          panel(t("masked scores"), H.masked, { ...TT, valueName: t("scaled score"), highlightRow: q, square: true }),
          panel(t("attention = softmax"), H.attention.map((r, i) => r.map((v, c) => (c > i ? null : v))), { ...TT, valueName: t("attention"), highlightRow: q, zmin: 0, zmax: 1, square: true }),
        ],
      };
    }
    case "Z": {
      const mine = att.reduce((s, a, c) => s + a * H.v[c][0], 0);
      return {
        text: t("Z = attention · V: each token's output is a weighted average of the value vectors of the tokens it " +
          "attends to. Z[{q}] ({qn}) is mostly V[{j}] ({jn}, weight {p}); its first number is " +
          "Σ A[{q}][k]·V[k][0] = {mine} (the model: {model}).", { q, qn, j, jn, p: pct(att[j]), mine: fmt(mine), model: fmt(H.z[q][0]) }),
        panels: [
          panel(t("attention"), H.attention.map((r, i) => r.map((v, c) => (c > i ? null : v))), { ...TT, valueName: t("attention"), highlightRow: q, zmin: 0, zmax: 1, square: true }),
          panel(`V  (${T} × ${dh})`, H.v, { ...tok, ...dims(t("{name} dim", { name: "v" })), valueName: "v", highlightRow: j }),
          panel(`Z  (${T} × ${dh})`, H.z, { ...tok, ...dims(t("{name} dim", { name: "z" })), valueName: "z", highlightRow: q }),
        ],
      };
    }
    case "out": {
      const nh = trace.n_heads;
      const mine = dot(H.z[q], col(H.wo, 0));
      return {
        text: t("All {nh} heads' Z are put side by side ({nh} × {dh} = {n} numbers per token) and multiplied by " +
          "the output matrix Wo, plus a bias: that is the attention layer's output, added to the residual stream. " +
          "This head's part is Z·Wo_h, its {dh} rows of Wo: for {qn} it adds {mine} to output dim 0, " +
          "of a total {total}.", { nh, dh, n: nh * dh, qn, mine: fmt(mine), total: fmt(H.out[q][0]) }),
        panels: [
          panel(t("Wo rows of head {head}  ({dh} × {D})", { head: state.head, dh, D }), H.wo, { rowName: t("{name} dim", { name: "z" }), colName: t("output dim"), valueName: "w" }),
          panel(t("attention output  ({T} × {D})", { T, D }), H.out, { ...tok, ...dims(t("dim")), valueName: "out", highlightRow: q }),
        ],
      };
    }
    default:
      return { text: "", panels: [] };
  }
}

function plotPanel(div, p) {
  const rows = p.z.length;
  const cols = p.z[0].length;
  const trace = heatmapTrace(p.z, {
    rowLabels: p.rowLabels, colLabels: p.colLabels, rowName: p.rowName, colName: p.colName, valueName: p.valueName,
    zmin: p.zmin, zmax: p.zmax, nullText: t("masked (−∞)"),
    signed: p.zmin === undefined, // all but the attention (0 to 1): inputs, weights, scores of either sign
  });
  trace.colorbar.thickness = 10;
  const layout = baseLayout({
    title: { text: p.title.replace(/</g, "&lt;"), x: 0.03, font: { size: 15 } },
    margin: { l: p.rowLabels ? 90 : 50, r: 10, t: 40, b: p.colLabels ? 90 : 40 },
    xaxis: p.colLabels ? labelAxis(p.colLabels, { tickangle: -50 }) : { title: { text: p.colName }, showgrid: false, zeroline: false },
    yaxis: p.rowLabels ? labelAxis(p.rowLabels, { autorange: "reversed" }) : { title: { text: p.rowName }, autorange: "reversed", showgrid: false, zeroline: false },
    shapes: p.highlightRow !== undefined ? [{
      type: "rect", xref: "paper", yref: "y", x0: 0, x1: 1, y0: p.highlightRow - 0.5, y1: p.highlightRow + 0.5,
      line: { color: MARK, width: 2.5 }, fillcolor: "rgba(0,0,0,0)",
    }] : [],
  });
  if (rows * cols === 0) return Promise.resolve();
  return plot(div, [trace], layout);
}

function show() {
  if (!H) return;
  const n = Math.min(Math.max(1, state.step | 0), STEPS.length);
  state.step = n;
  writeState(state);
  $("step-label").textContent = t("Step {n} of {total}: {title}", { n, total: STEPS.length, title: STEPS[n - 1].title });
  $("prev-step").disabled = n <= 1;
  $("next-step").disabled = n >= STEPS.length;
  document.querySelectorAll("#step-dots button").forEach((b, i) => b.classList.toggle("current", i + 1 === n));
  const content = stepContent(n);
  $("step-text").textContent = content.text;
  const box = $("step-plots");
  box.querySelectorAll(".plot").forEach((d) => Plotly.purge(d));
  box.replaceChildren();
  box.style.gridTemplateColumns = `repeat(${content.panels.length}, minmax(0, 1fr))`;
  for (const p of content.panels) {
    const div = document.createElement("div");
    div.className = "plot";
    box.append(div);
    plotPanel(div, p);
  }
}

function go(step) {
  if (step < 1 || step > STEPS.length) return;
  state.step = step;
  show();
}

function wire() {
  $("text").value = state.text;
  const dots = $("step-dots");
  STEPS.forEach((s, i) => {
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = String(i + 1);
    b.title = s.title;
    b.setAttribute("aria-label", t("Step {n}: {title}", { n: i + 1, title: s.title }));
    b.addEventListener("click", () => go(i + 1));
    li.append(b);
    dots.append(li);
  });
  $("prev-step").addEventListener("click", () => go(state.step - 1));
  $("next-step").addEventListener("click", () => go(state.step + 1));
  keys({
    left: { does: t("previous step"), run: () => go(state.step - 1) },
    right: { does: t("next step"), run: () => go(state.step + 1) },
    up: { does: t("previous head"), run: () => stepSelect($("head"), -1) },
    down: { does: t("next head"), run: () => stepSelect($("head"), 1) },
  });
  onRunForm(() => {
    state.q = -1;
    run();
  });
  onLayerHeadChange(state, loadHead);
  $("query").addEventListener("change", () => {
    state.q = Number($("query").value);
    show();
  });
  $("model").addEventListener("change", () => {
    state.model = $("model").value;
    run();
  });
}

wire();
initModelSelect(state).then(run);
