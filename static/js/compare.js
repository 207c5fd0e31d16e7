// /text/compare: the same head on two texts; where does one token (default "it") look in each?
import {
  $, api, readState, writeState, guarded, latestOnly, onRunForm, initModelSelect, fillLayerHead, onLayerHeadChange,
  renderChips, tokenLabels, defaultQuery, wireToNested, labelAxis, baseLayout, plot, plotlyText, probabilityBars,
  pct, fmt, keys, layerHeadKeys, setTraceExport, t,
} from "./common.js";

const state = readState({
  a: $("text-a").value, b: $("text-b").value, model: "", layer: 0, head: 0, qa: -1, qb: -1,
});
const sides = { a: null, b: null }; // per side: {tokens, att}
const seq = latestOnly();

function body(side, extra = {}) {
  const b = { text: state[side], ...extra };
  if (state.model) b.model = state.model;
  return b;
}

async function run() {
  state.a = $("text-a").value;
  state.b = $("text-b").value;
  state.model = $("model").value || state.model;
  const my = seq.start();
  await guarded(async () => {
    const [ta, tb] = await Promise.all([api("/api/text/trace", body("a")), api("/api/text/trace", body("b"))]);
    if (seq.isStale(my)) return;
    setTraceExport("/api/text/export", body("a"), "download-trace-a");
    setTraceExport("/api/text/export", body("b"), "download-trace-b");
    fillLayerHead(state, ta);
    for (const [side, r] of [["a", ta], ["b", tb]]) {
      const key = `q${side}`;
      if (!(state[key] >= 0 && state[key] < r.tokens.length)) state[key] = defaultQuery(r.tokens);
    }
    await loadHead(my);
  });
}

async function loadHead(my = seq.start()) {
  const extra = { layer: state.layer, head: state.head };
  const [aa, ab] = await Promise.all([api("/api/text/attention", body("a", extra)), api("/api/text/attention", body("b", extra))]);
  if (seq.isStale(my)) return;
  sides.a = { tokens: aa.tokens, att: wireToNested(aa.attention) };
  sides.b = { tokens: ab.tokens, att: wireToNested(ab.attention) };
  writeState(state);
  draw();
}

function select(side, i) {
  state[`q${side}`] = i;
  // Follow the same word in the other text when it has it (the occurrence nearest this position).
  const other = side === "a" ? "b" : "a";
  const word = sides[side].tokens[i].text.trim().toLowerCase();
  let best = -1;
  sides[other].tokens.forEach((t, j) => {
    if (t.text.trim().toLowerCase() === word && (best < 0 || Math.abs(j - i) < Math.abs(best - i))) best = j;
  });
  if (best >= 0) state[`q${other}`] = best;
  writeState(state);
  draw();
}

function samePrefix() {
  const qa = state.qa;
  const qb = state.qb;
  if (qa !== qb) return false;
  for (let i = 0; i <= qa; i++) if (sides.a.tokens[i].id !== sides.b.tokens[i].id) return false;
  return true;
}

function draw() {
  $("compare-note").textContent = samePrefix()
    ? t("The two texts are identical up to the token you follow, and GPT-2 reads left to right: a token cannot see the " +
      "words after it, so its attention is the same in both. Follow a token after the word that differs (click it) " +
      "to see the difference spread.")
    : t("The texts differ before or at the token you follow, so its attention can differ: compare the bars.");
  const rows = {};
  let maxV = 0.05;
  for (const side of ["a", "b"]) {
    const q = state[`q${side}`];
    rows[side] = sides[side].att[q].slice(0, q + 1);
    maxV = Math.max(maxV, ...rows[side]);
  }
  for (const side of ["a", "b"]) {
    const { tokens } = sides[side];
    const labels = tokenLabels(tokens);
    const q = state[`q${side}`];
    const row = rows[side];
    renderChips($(`tokens-${side}`), tokens, { selected: q, onSelect: (i) => select(side, i) });
    const order = row.map((v, j) => j).sort((x, y) => row[y] - row[x]).slice(0, 3);
    $(`summary-${side}`).textContent = t("“{token}” looks most at {keys}.", {
      token: labels[q], keys: order.map((j) => `“${labels[j]}” (${pct(row[j])})`).join(", "),
    });
    const bars = probabilityBars(row, row.map((v, j) => plotlyText(`${labels[q]} → ${labels[j]}: ${fmt(v)}`)));
    const layout = baseLayout({
      title: { text: plotlyText(t("attention from “{token}”, layer {layer} head {head}", { token: labels[q], layer: state.layer, head: state.head })), x: 0.03, font: { size: 14 } },
      xaxis: { range: [0, Math.min(1.2, maxV * 1.25 + 0.03)], title: { text: t("attention weight") }, gridcolor: "#e4e7eb" },
      yaxis: labelAxis(labels.slice(0, q + 1), { autorange: "reversed" }),
      margin: { l: 110, r: 30, t: 36, b: 50 },
      bargap: 0.15,
    });
    plot($(`chart-${side}`), [bars], layout);
  }
}

function wire() {
  $("text-a").value = state.a;
  $("text-b").value = state.b;
  onRunForm(() => {
    state.qa = -1;
    state.qb = -1;
    run();
  });
  onLayerHeadChange(state, loadHead);
  keys(layerHeadKeys());
  $("model").addEventListener("change", run);
}

wire();
initModelSelect(state).then(run);
