// /vision/patches: the picture cut into patches; a hovered (or chosen) patch is followed in: its
// pixels, flattened, then its patch embedding, position embedding and their sum.
import {
  $, api, writeState, latestOnly, fillSelect, decodeArray, heatmapTrace, labelAxis, baseLayout, plot, PLOT_CONFIG, keys, t, DIVERGING,
} from "./common.js";
import { visionState, visionBody, initPicker, pictureFigure, drawPicture, patchName } from "./vision.js";

const state = visionState({ patch: 0 });
let trace = null;
let shown = -1; // the patch drawn on the right
const cache = new Map(); // patch -> /api/vision/patch answer, for this picture
const seq = latestOnly();

async function onTrace(vt) {
  trace = vt;
  cache.clear();
  shown = -1;
  state.patch = fillSelect($("patch"), vt.grid[0] * vt.grid[1], state.patch);
  drawImage();
  await showPatch(state.patch);
}

function drawImage() {
  drawPicture($("image"), pictureFigure(trace, { selected: state.patch }), {
    onHover: (i) => showPatch(i),
    onClick: (i) => choose(i),
    trace: () => trace,
  });
}

function choose(i) {
  state.patch = i;
  $("patch").value = String(i);
  writeState(state);
  drawImage();
  showPatch(i);
}

async function showPatch(i) {
  if (!trace || i === shown) return;
  const my = seq.start();
  let p = cache.get(i);
  if (!p) {
    p = await api("/api/vision/patch", visionBody(state, { patch: i }));
    cache.set(i, p);
  }
  if (seq.isStale(my)) return;
  shown = i;
  drawPatch(p);
}

function drawPatch(p) {
  const vt = trace;
  const [H, W] = vt.image_size;
  const [ph, pw] = vt.patch_size;
  const x0 = p.col * pw, y0 = p.row * ph;
  const dim = vt.d_model;
  $("patch-caption").textContent = t("{patch}: {ph}×{pw} pixels × 3 channels = {n} numbers → × a {dim}×{n} matrix → {dim} numbers",
    { patch: patchName(vt, p.patch), ph, pw, n: 3 * ph * pw, dim });
  // The patch itself: the same picture, zoomed to the patch.
  plot($("patch-image"), [], baseLayout({
    margin: { l: 10, r: 10, t: 10, b: 10 },
    xaxis: { range: [x0, x0 + pw], visible: false, constrain: "domain" },
    yaxis: { range: [y0 + ph, y0], visible: false, scaleanchor: "x", constrain: "domain" },
    images: [{ source: vt.image_url, xref: "x", yref: "y", x: 0, y: 0, sizex: W, sizey: H, sizing: "stretch", layer: "below" }],
  }), { ...PLOT_CONFIG, staticPlot: true });
  // Flattened: three rows (R, G, B) of p·p values, in the order the projection reads them.
  const px = decodeArray(p.pixels);
  const n = ph * pw;
  const flat = [0, 1, 2].map((ch) => Array.from(px.data.subarray(ch * n, (ch + 1) * n)));
  const channels = ["R", "G", "B"];
  plot($("flat"), [heatmapTrace(flat, {
    rowLabels: channels, rowName: t("channel"), colName: t("pixel"), valueName: t("value"), colorbar: false,
  })], baseLayout({
    xaxis: { title: { text: t("pixel in the patch, row by row (0–{last})", { last: n - 1 }) }, showgrid: false },
    yaxis: labelAxis(channels, { autorange: "reversed" }),
    margin: { l: 40, r: 10, t: 5, b: 45 },
  }));
  const rows = [t("patch embedding"), t("+ position"), t("= token")];
  const vecs = [p.embedding, p.position, p.stream].map((a) => Array.from(decodeArray(a).data));
  const lim = Math.max(...vecs.flat().map(Math.abs), 1e-6);
  const heat = heatmapTrace(vecs, { rowLabels: rows, rowName: "", colName: t("dimension"), valueName: t("value"), zmin: -lim, zmax: lim });
  heat.colorscale = DIVERGING;
  plot($("embedding"), [heat], baseLayout({
    xaxis: { title: { text: t("dimension (0–{last})", { last: dim - 1 }) }, showgrid: false },
    yaxis: labelAxis(rows, { autorange: "reversed" }),
    margin: { l: 120, r: 10, t: 5, b: 45 },
  }));
}

/** Follow the patch `dr` rows and `dc` columns from this one, if the picture has it. */
function movePatch(dr, dc) {
  if (!trace) return;
  const [rows, cols] = trace.grid;
  const r = Math.floor(state.patch / cols) + dr;
  const c = (state.patch % cols) + dc;
  if (r >= 0 && r < rows && c >= 0 && c < cols) choose(r * cols + c);
}

$("patch").addEventListener("change", () => choose(Number($("patch").value)));
keys({
  left: { does: t("follow the patch to the left"), run: () => movePatch(0, -1) },
  right: { does: t("follow the patch to the right"), run: () => movePatch(0, 1) },
  up: { does: t("follow the patch above"), run: () => movePatch(-1, 0) },
  down: { does: t("follow the patch below"), run: () => movePatch(1, 0) },
});
initPicker(state, onTrace);
