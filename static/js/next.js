// /text/next: next-token probabilities with a temperature slider; add a token or generate one.
import {
  $, api, readState, writeState, guarded, latestOnly, runText, onRunForm, initModelSelect, textBody, fillLayerHead,
  onLayerHeadChange, renderChips, tokenLabels, showToken, autoGrow, wireToNested, heatmapTrace, labelAxis, baseLayout,
  plot, reactWithClick, plotlyText, probabilityBars, pct, fmt, keys, stepSelect, t, DEFAULT_TEXT,
} from "./common.js";

const K = 10;
const state = readState({ text: DEFAULT_TEXT, model: "", temperature: 1, layer: 0, head: 0 });
let trace = null;
const seq = latestOnly();
const nextSeq = latestOnly(); // the temperature slider's own requests

function temperature() {
  return Math.min(3, Math.max(0.1, Number($("temperature").value) || 1));
}

async function run() {
  await runText(state, seq, "/api/text/trace", async (r, my) => {
    trace = r;
    fillLayerHead(state, r);
    const n = r.tokens.length;
    $("token-count").textContent = n === 1 ? t("1 token") : t("{n} tokens", { n });
    renderChips($("tokens"), r.tokens);
    writeState(state);
    await Promise.all([loadNext(), loadAttention(my)]);
  });
}

async function loadNext() {
  if (!trace) return;
  state.temperature = temperature();
  const my = nextSeq.start();
  const r = await api("/api/text/next", textBody(state, { temperature: state.temperature, k: K }));
  if (nextSeq.isStale(my)) return;
  writeState(state);
  drawNext(r.tokens);
}

async function loadAttention(my = seq.current()) {
  if (!trace) return;
  const a = await api("/api/text/attention", textBody(state, { layer: state.layer, head: state.head }));
  if (seq.isStale(my)) return;
  writeState(state);
  const labels = tokenLabels(a.tokens);
  const z = wireToNested(a.attention).map((row, i) => row.map((v, j) => (j > i ? null : v)));
  const heat = heatmapTrace(z, { rowLabels: labels, colLabels: labels, rowName: t("query"), colName: t("key"), valueName: t("attention"), zmin: 0, zmax: 1 });
  heat.colorbar.thickness = 10;
  const layout = baseLayout({
    title: { text: t("Layer {layer}, head {head}", state), x: 0.03, font: { size: 14 } },
    xaxis: labelAxis(labels, { tickangle: -50 }),
    yaxis: labelAxis(labels, { autorange: "reversed" }),
    margin: { l: 90, r: 10, t: 36, b: 90 },
  });
  await plot($("heatmap"), [heat], layout);
}

function drawNext(cands) {
  const labels = cands.map((c) => `“${showToken(c.text)}”`);
  const bars = probabilityBars(
    cands.map((c) => c.prob),
    cands.map((c) => plotlyText(t("{token}: p = {p}, logit {logit} — click to add", { token: showToken(c.text), p: fmt(c.prob), logit: fmt(c.logit) }))),
  );
  const maxP = Math.max(...cands.map((c) => c.prob), 0.01);
  const layout = baseLayout({
    xaxis: { range: [0, Math.min(1.2, maxP * 1.3 + 0.02)], title: { text: t("probability at temperature {temperature}", { temperature: fmt(state.temperature) }) }, gridcolor: "#e4e7eb" },
    yaxis: labelAxis(labels, { autorange: "reversed" }),
    margin: { l: 110, r: 30, t: 10, b: 50 },
    bargap: 0.2,
  });
  const gd = $("next-chart");
  reactWithClick(gd, [bars], layout, (p) => {
    const c = gd.candidates && gd.candidates[p.pointIndex];
    if (c) addToken(c.text);
  });
  gd.candidates = cands;

  const list = $("candidates");
  list.replaceChildren();
  cands.forEach((c, i) => {
    const li = document.createElement("li");
    const rank = document.createElement("span");
    rank.className = "rank";
    rank.textContent = `${i + 1}.`;
    const tok = document.createElement("span");
    tok.className = "cand";
    tok.textContent = c.text;
    const prob = document.createElement("span");
    prob.className = "prob";
    prob.textContent = pct(c.prob);
    const add = document.createElement("button");
    add.type = "button";
    add.className = "add-token";
    add.textContent = t("add");
    add.setAttribute("aria-label", t("Add “{token}” to the text", { token: c.text }));
    add.addEventListener("click", () => addToken(c.text));
    li.append(rank, tok, prob, add);
    list.append(li);
  });
}

function addToken(text) {
  $("text").value = $("text").value + text;
  autoGrow($("text"));
  run();
}

/** Take the last token off the text and run again: the step back from generating one. */
function dropToken() {
  if (!trace || trace.tokens.length < 2) return;
  const last = trace.tokens[trace.tokens.length - 1].text;
  const text = $("text").value;
  if (!text.endsWith(last)) return; // the text was edited since it ran: leave it as typed
  $("text").value = text.slice(0, text.length - last.length);
  autoGrow($("text"));
  run();
}

async function generate() {
  const my = seq.start();
  state.text = $("text").value;
  await guarded(async () => {
    const r = await api("/api/text/generate", textBody(state, { temperature: temperature() }));
    if (seq.isStale(my)) return;
    $("text").value = r.text;
    autoGrow($("text"));
  }, t("Generating…"));
  if ($("text").value !== state.text) await run();
}

function wire() {
  $("text").value = state.text;
  $("temperature").value = String(state.temperature);
  $("temperature-value").textContent = temperature().toFixed(2);
  onRunForm(run);
  let timer = null;
  $("temperature").addEventListener("input", () => {
    $("temperature-value").textContent = temperature().toFixed(2);
    clearTimeout(timer);
    timer = setTimeout(() => guarded(loadNext, t("Re-weighing…")), 120);
  });
  $("generate").addEventListener("click", generate);
  onLayerHeadChange(state, loadAttention);
  keys({
    left: { does: t("take the last token off"), run: dropToken },
    right: { does: t("generate one token"), run: generate },
    up: { does: t("previous head (the attention)"), run: () => stepSelect($("head"), -1) },
    down: { does: t("next head (the attention)"), run: () => stepSelect($("head"), 1) },
  });
  $("model").addEventListener("change", run);
}

wire();
initModelSelect(state).then(run);
