// /vision/rollout: attention rollout of CLS (or a clicked patch) after each layer; a slider steps
// through the layers without asking the server again.
import { $, api, writeState, latestOnly, decodeArray, baseLayout, plot, plotlyText, pct, keys, stepRange, CATEGORICAL, MARK } from "./common.js";
import { visionState, visionBody, initPicker, pictureFigure, drawPicture, toGrid, tokenName, fillFrom } from "./vision.js";

const state = visionState({ step: -1, from: 0 }); // step -1: the last layer
let trace = null;
let rollout = null; // {shape: [L, 1+P], data}
const seq = latestOnly();

async function onTrace(t) {
  trace = t;
  const slider = $("step");
  slider.max = String(t.n_layers - 1);
  if (!(state.step >= 0 && state.step < t.n_layers)) state.step = t.n_layers - 1;
  slider.value = String(state.step);
  state.from = fillFrom(t, state.from);
  await loadRollout();
}

async function loadRollout() {
  const my = seq.start();
  const r = await api("/api/vision/rollout", visionBody(state, { source: state.from }));
  if (seq.isStale(my)) return;
  rollout = decodeArray(r.rollout);
  writeState(state);
  draw();
}

function rowAt(layer) {
  const N = rollout.shape[1];
  return rollout.data.subarray(layer * N, (layer + 1) * N);
}

function draw() {
  const t = trace;
  const r = rowAt(state.step);
  const patches = r.slice(1);
  $("step-out").textContent = `${state.step} of ${t.n_layers - 1}`;
  $("rollout-caption").textContent =
    `Rollout of ${tokenName(t, state.from)} after layer ${state.step}: ${pct(r[state.from])} stays on itself, ${pct(r[0])} on CLS's input.`;
  const fig = pictureFigure(t, {
    heat: toGrid(t, patches), selected: state.from - 1, valueName: "rollout", zmax: Math.max(1e-6, ...patches),
  });
  drawPicture($("image"), fig, { onClick: (i) => selectFrom(i + 1), trace: () => trace });
  const L = rollout.shape[0];
  const self = Array.from({ length: L }, (_, l) => rowAt(l)[state.from]);
  const bars = {
    type: "bar", x: self.map((_, l) => `layer ${l}`), y: self,
    marker: { color: self.map((_, l) => (l === state.step ? MARK : CATEGORICAL[0])) }, // magenta and blue: apart in any colour vision
    text: self.map(pct), textposition: "outside", cliponaxis: false,
    hovertext: self.map((v, l) => plotlyText(`after layer ${l}: ${pct(v)} on ${tokenName(t, state.from)} itself`)), hoverinfo: "text",
  };
  plot($("self-chart"), [bars], baseLayout({
    yaxis: { range: [0, 1.1], title: { text: "share on the token itself" }, gridcolor: "#e4e7eb" },
    margin: { l: 70, r: 20, t: 20, b: 50 },
  }));
}

function selectFrom(token) {
  state.from = token;
  $("from").value = String(token);
  loadRollout();
}

function wire() {
  $("step").addEventListener("input", () => {
    state.step = Number($("step").value);
    writeState(state);
    if (rollout) draw();
  });
  $("from-cls").addEventListener("click", () => selectFrom(0));
  $("from").addEventListener("change", () => selectFrom(Number($("from").value)));
  keys({
    left: { does: "previous layer", run: () => stepRange($("step"), -1) },
    right: { does: "next layer", run: () => stepRange($("step"), 1) },
  });
}

wire();
initPicker(state, onTrace);
