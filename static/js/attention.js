// /text/attention: one layer/head as a heatmap; click a cell (or a chip) for that query's row.
import {
  $, api, readState, writeState, latestOnly, runText, renderChips, tokenLabels, fillLayerHead, onLayerHeadChange, onRunForm,
  initModelSelect, textBody, wireToNested, heatmapTrace, labelAxis, baseLayout, plot, reactWithClick, plotlyText,
  probabilityBars, fmt, pct, defaultQuery, keys, layerHeadKeys, t, MARK, DEFAULT_TEXT,
} from "./common.js";

const state = readState({ text: DEFAULT_TEXT, model: "", layer: 0, head: 0, q: -1 });
let trace = null; // the last /api/text/trace answer
let matrix = null; // [T][T] attention of the shown head
const seq = latestOnly();

async function run() {
  await runText(state, seq, "/api/text/trace", async (r, my) => {
    trace = r;
    fillLayerHead(state, r);
    if (!(state.q >= 0 && state.q < r.tokens.length)) state.q = defaultQuery(r.tokens);
    await loadHead(my);
  });
}

async function loadHead(my = seq.start()) {
  if (!trace) return;
  const a = await api("/api/text/attention", textBody(state, { layer: state.layer, head: state.head }));
  if (seq.isStale(my)) return;
  matrix = wireToNested(a.attention);
  writeState(state);
  draw();
}

function draw() {
  const tokens = trace.tokens;
  const labels = tokenLabels(tokens);
  const T = tokens.length;
  // Above the diagonal a token would look at the future: GPT-2 cannot, so those cells are blank.
  const z = matrix.map((row, i) => row.map((v, j) => (j > i ? null : v)));
  const heat = heatmapTrace(z, {
    rowLabels: labels, colLabels: labels, rowName: t("query"), colName: t("key"), valueName: t("attention"),
    zmin: 0, zmax: 1, nullText: t("— (a token cannot look ahead: masked)"),
  });
  heat.colorbar.title = { text: t("attention"), side: "right" };
  const layout = baseLayout({
    title: { text: t("Layer {layer}, head {head}", state), x: 0.02, font: { size: 16 } },
    xaxis: labelAxis(labels, { title: { text: t("key: the token looked at") }, tickangle: -50, side: "bottom" }),
    yaxis: labelAxis(labels, { title: { text: t("query: the token looking") }, autorange: "reversed" }),
    margin: { l: 110, r: 10, t: 40, b: 110 },
    shapes: state.q >= 0 && state.q < T ? [{
      type: "rect", xref: "x", yref: "y", x0: -0.5, x1: state.q + 0.5, y0: state.q - 0.5, y1: state.q + 0.5,
      line: { color: MARK, width: 3 }, fillcolor: "rgba(0,0,0,0)",
    }] : [],
  });
  const gd = $("heatmap");
  reactWithClick(gd, [heat], layout, (p) => {
    if (Number.isInteger(p.y)) selectQuery(p.y);
  });
  renderChips($("tokens"), tokens, { selected: state.q, onSelect: selectQuery });
  drawRow(labels);
}

function selectQuery(i) {
  state.q = i;
  writeState(state);
  draw();
}

/** The bar chart of the followed query's row; `labels`: draw()'s token labels. */
function drawRow(labels) {
  const q = state.q;
  if (!(q >= 0 && q < labels.length)) return;
  const row = matrix[q].slice(0, q + 1);
  const keys = labels.slice(0, q + 1);
  const best = row.reduce((b, v, j) => (v > row[b] ? j : b), 0);
  $("row-caption").textContent = t("Attention of “{token}” (row {q}): it looks most at “{best}” ({p}). The bars sum to 1.",
    { token: labels[q], q, best: labels[best], p: pct(row[best]) });
  const bars = probabilityBars(row, row.map((v, j) => plotlyText(`${labels[q]} → ${keys[j]}: ${fmt(v)}`)));
  const layout = baseLayout({
    xaxis: { range: [0, Math.min(1.15, Math.max(...row) * 1.25 + 0.05)], title: { text: t("attention weight") }, zeroline: true, gridcolor: "#e4e7eb" },
    yaxis: labelAxis(keys, { autorange: "reversed" }),
    margin: { l: 110, r: 30, t: 10, b: 50 },
    bargap: 0.15,
  });
  plot($("row-chart"), [bars], layout);
}

function wire() {
  $("text").value = state.text;
  onRunForm(() => {
    state.q = -1; // a new text: follow its "it" (or its last token)
    run();
  });
  onLayerHeadChange(state, loadHead);
  keys(layerHeadKeys());
  $("model").addEventListener("change", () => {
    state.model = $("model").value;
    run();
  });
}

wire();
initModelSelect(state).then(run);
