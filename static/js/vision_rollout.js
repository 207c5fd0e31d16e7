// /vision/rollout: attention rollout of CLS (or a clicked patch) after each layer; a slider steps
// through the layers without asking the server again.
import { $, api, writeState, latestOnly, decodeArray, baseLayout, plot, plotlyText, pct, keys, stepRange, t, CATEGORICAL, MARK } from "./common.js";
import { visionState, visionBody, initPicker, pictureFigure, drawPicture, toGrid, tokenName, fillFrom } from "./vision.js";

const state = visionState({ step: -1, from: 0 }); // step -1: the last layer
let trace = null;
let rollout = null; // {shape: [L, 1+P], data}
const seq = latestOnly();

async function onTrace(vt) {
  trace = vt;
  const slider = $("step");
  slider.max = String(vt.n_layers - 1);
  if (!(state.step >= 0 && state.step < vt.n_layers)) state.step = vt.n_layers - 1;
  slider.value = String(state.step);
  state.from = fillFrom(vt, state.from);
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
  const vt = trace;
  const r = rowAt(state.step);
  const patches = r.slice(1);
  const who = tokenName(vt, state.from);
  $("step-out").textContent = t("{n} of {last}", { n: state.step, last: vt.n_layers - 1 });
  $("rollout-caption").textContent = t("Rollout of {who} after layer {layer}: {self} stays on itself, {cls} on CLS's input.",
    { who, layer: state.step, self: pct(r[state.from]), cls: pct(r[0]) });
  const fig = pictureFigure(vt, {
    heat: toGrid(vt, patches), selected: state.from - 1, valueName: t("rollout"), zmax: Math.max(1e-6, ...patches),
  });
  drawPicture($("image"), fig, { onClick: (i) => selectFrom(i + 1), trace: () => trace });
  const L = rollout.shape[0];
  const self = Array.from({ length: L }, (_, l) => rowAt(l)[state.from]);
  const bars = {
    type: "bar", x: self.map((_, l) => t("layer {layer}", { layer: l })), y: self,
    marker: { color: self.map((_, l) => (l === state.step ? MARK : CATEGORICAL[0])) }, // magenta and blue: apart in any colour vision
    text: self.map(pct), textposition: "outside", cliponaxis: false,
    hovertext: self.map((v, l) => plotlyText(t("after layer {layer}: {p} on {who} itself", { layer: l, p: pct(v), who }))), hoverinfo: "text",
  };
  plot($("self-chart"), [bars], baseLayout({
    yaxis: { range: [0, 1.1], title: { text: t("share on the token itself") }, gridcolor: "#e4e7eb" },
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
    left: { does: t("previous layer"), run: () => stepRange($("step"), -1) },
    right: { does: t("next layer"), run: () => stepRange($("step"), 1) },
  });
}

wire();
initPicker(state, onTrace);
