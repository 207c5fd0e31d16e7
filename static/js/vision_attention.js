// /vision/attention: one layer's attention (a head, or the mean of heads) from CLS or a clicked patch,
// drawn over the picture, with the raw [1+P, 1+P] matrix beside it.
import {
  $, api, writeState, latestOnly, guarded, fillSelect, decodeArray, toNested, heatmapTrace, labelAxis, baseLayout, reactWithClick, pct,
  keys, layerHeadKeys, t, MARK,
} from "./common.js";
import { visionState, visionBody, initPicker, pictureFigure, drawPicture, toGrid, tokenName, fillFrom } from "./vision.js";

// head -1: the mean of the layer's heads. from: 0 is CLS, 1 + i is patch i.
const state = visionState({ layer: 0, head: -1, from: 0, opacity: 0.6 });
let trace = null;
let matrix = null; // {shape: [N, N], data}
const seq = latestOnly();

function fillHeads(n) {
  const sel = $("head");
  if (sel.options.length !== n + 1) {
    sel.replaceChildren();
    const mean = document.createElement("option");
    mean.value = "-1";
    mean.textContent = t("mean of heads");
    sel.append(mean);
    for (let h = 0; h < n; h++) {
      const o = document.createElement("option");
      o.value = String(h);
      o.textContent = String(h);
      sel.append(o);
    }
  }
  if (!(state.head >= -1 && state.head < n)) state.head = -1;
  sel.value = String(state.head);
}

async function onTrace(vt) {
  trace = vt;
  state.layer = fillSelect($("layer"), vt.n_layers, state.layer);
  fillHeads(vt.n_heads);
  state.from = fillFrom(vt, state.from);
  await loadMatrix();
}

async function loadMatrix() {
  if (!trace) return;
  const my = seq.start();
  const body = visionBody(state, { layer: state.layer, head: state.head >= 0 ? state.head : null });
  const a = await api("/api/vision/attention", body);
  if (seq.isStale(my)) return;
  matrix = decodeArray(a.attention);
  writeState(state);
  draw();
}

function row(token) {
  const N = matrix.shape[1];
  return matrix.data.subarray(token * N, (token + 1) * N);
}

function draw() {
  const vt = trace;
  const r = row(state.from);
  const patches = r.slice(1);
  const who = tokenName(vt, state.from);
  const which = state.head >= 0 ? t("layer {layer}, head {head}", state) : t("layer {layer}, mean of {n} heads", { layer: state.layer, n: vt.n_heads });
  $("overlay-caption").textContent = t("Attention from {who}, {which}. It keeps {p} on CLS (not drawn on the picture); the colour scale runs to the largest patch.",
    { who, which, p: pct(r[0]) });
  const fig = pictureFigure(vt, {
    heat: toGrid(vt, patches), opacity: state.opacity, selected: state.from - 1, valueName: t("attention"),
    zmax: Math.max(1e-6, ...patches),
  });
  drawPicture($("image"), fig, { onClick: (i) => selectFrom(i + 1), trace: () => trace });
  drawMatrix();
}

function drawMatrix() {
  const N = matrix.shape[0];
  const labels = Array.from({ length: N }, (_, i) => (i === 0 ? "CLS" : `p${i - 1}`));
  const heat = heatmapTrace(toNested(matrix), {
    rowLabels: labels, colLabels: labels, rowName: t("from"), colName: t("to"), valueName: t("attention"), zmin: 0,
  });
  const every = Math.max(1, Math.ceil(N / 24)); // a readable number of ticks for 65 or 197 tokens
  const ticks = labels.map((l, i) => (i % every === 0 ? l : ""));
  const layout = baseLayout({
    xaxis: labelAxis(ticks, { title: { text: t("key: the token looked at") }, tickangle: -60 }),
    yaxis: labelAxis(ticks, { title: { text: t("query: the token looking") }, autorange: "reversed" }),
    margin: { l: 70, r: 10, t: 10, b: 70 },
    shapes: [{ type: "rect", x0: -0.5, x1: N - 0.5, y0: state.from - 0.5, y1: state.from + 0.5, line: { color: MARK, width: 2 } }],
  });
  reactWithClick($("matrix"), [heat], layout, (p) => {
    if (Number.isInteger(p.y)) selectFrom(p.y);
  });
}

function selectFrom(token) {
  state.from = token;
  $("from").value = String(token);
  writeState(state);
  draw();
}

function wire() {
  for (const id of ["layer", "head"]) {
    $(id).addEventListener("change", () => {
      state[id] = Number($(id).value);
      guarded(() => loadMatrix());
    });
  }
  $("from-cls").addEventListener("click", () => selectFrom(0));
  $("from").addEventListener("change", () => selectFrom(Number($("from").value)));
  keys(layerHeadKeys()); // ↑ from head 0 reaches "mean of heads", the list's first entry
  const op = $("opacity");
  op.value = String(state.opacity);
  $("opacity-out").textContent = op.value;
  op.addEventListener("input", () => {
    state.opacity = Number(op.value);
    $("opacity-out").textContent = op.value;
    writeState(state);
    if (matrix) draw();
  });
}

wire();
initPicker(state, onTrace);
