// /vision/heads: each head's mean attention distance against depth, and the position embeddings'
// cosine similarity as one small grid per patch. The arrow keys mark a head (layer, head); Enter opens it.
import {
  $, api, writeState, decodeArray, baseLayout, plot, plotlyText, fmt, pageUrl, viridis, keys, t, CATEGORICAL, DIVERGING, MARK,
  OUTLINE,
} from "./common.js";
import { visionState, visionBody, initPicker } from "./vision.js";

const state = visionState({ layer: 0, head: 0 }); // layer, head: the marked head
let trace = null;
let heads = null; // {d: decoded distance [L, H], max: the largest possible distance}

async function onTrace(vt) {
  trace = vt;
  const h = await api("/api/vision/heads", visionBody(state));
  heads = { d: decodeArray(h.distance), max: h.max_distance };
  moveMark(0, 0);
  drawPositions(vt, decodeArray(h.position_similarity));
}

/** The marked head on the attention page. */
function openUrl() {
  return pageUrl("/vision/attention", { image: state.image, model: state.model, layer: state.layer, head: state.head });
}

/** Move the mark by (layers, heads), inside the model; the chart, the link and the URL follow. */
function moveMark(dl, dh) {
  if (!heads) return;
  const [L, H] = heads.d.shape;
  state.layer = Math.min(Math.max(0, (state.layer | 0) + dl), L - 1);
  state.head = Math.min(Math.max(0, (state.head | 0) + dh), H - 1);
  writeState(state);
  const link = $("open-head");
  link.href = openUrl();
  link.textContent = t("Open layer {layer}, head {head} on the attention page →", state);
  link.hidden = false;
  drawDistance(heads.d, heads.max);
}

/** The x of head h's point in layer l: the heads of a layer spread a little. */
const spread = (l, h, H) => l + (h - (H - 1) / 2) * 0.06;

function drawDistance(d, maxDistance) {
  const [L, H] = d.shape;
  const data = [];
  for (let h = 0; h < H; h++) {
    // Heads are categories: Okabe-Ito while it has colours enough, else Viridis steps (both colour-blind safe).
    const [r, g, b] = viridis(H > 1 ? h / (H - 1) : 0.5);
    const color = H <= CATEGORICAL.length - 1 ? CATEGORICAL[h] : `rgb(${r},${g},${b})`;
    const ys = Array.from({ length: L }, (_, l) => d.data[l * H + h]);
    data.push({
      type: "scatter", mode: "markers", name: t("head {head}", { head: h }),
      x: ys.map((_, l) => spread(l, h, H)),
      y: ys, customdata: ys.map((_, l) => [l, h]),
      marker: { size: 12, color, line: { color: OUTLINE, width: 0.5 } },
      hovertext: ys.map((v, l) => t("layer {layer}, head {head}: {d} px", { layer: l, head: h, d: fmt(v) })), hoverinfo: "text",
    });
  }
  const layout = baseLayout({
    title: { text: t("Mean attention distance (click a head to open it)"), x: 0.02, font: { size: 15 } },
    xaxis: { title: { text: t("layer (depth)") }, tickmode: "linear", dtick: 1, gridcolor: "#e4e7eb", zeroline: false },
    yaxis: { title: { text: t("mean distance, input pixels") }, range: [0, maxDistance], gridcolor: "#e4e7eb" },
    margin: { l: 70, r: 10, t: 40, b: 85 },
    legend: { orientation: "h", yref: "container", y: 0, yanchor: "bottom" }, // under the axis title at any type size
    // The marked head: a ring around its point, sized in pixels so it stays round at any zoom.
    shapes: [{
      type: "circle", xsizemode: "pixel", ysizemode: "pixel", xref: "x", yref: "y",
      xanchor: spread(state.layer, state.head, H), yanchor: d.data[state.layer * H + state.head],
      x0: -13, x1: 13, y0: -13, y1: 13, line: { color: MARK, width: 3 },
    }],
  });
  const gd = $("distance");
  plot(gd, data, layout).then(() => {
    if (gd.dataset.wired) return;
    gd.dataset.wired = "1";
    gd.on("plotly_click", (ev) => {
      const p = ev && ev.points && ev.points[0];
      if (p && p.customdata) window.location.href = pageUrl("/vision/attention", { image: state.image, model: state.model, layer: p.customdata[0], head: p.customdata[1] });
    });
  });
}

/** One rows×cols map per patch (its similarity to every patch), laid out on the grid with one-cell gaps. */
function drawPositions(vt, s) {
  const [rows, cols] = vt.grid;
  const P = rows * cols;
  const Z = (rows + 1) * rows - 1, X = (cols + 1) * cols - 1;
  const z = Array.from({ length: Z }, () => new Array(X).fill(null));
  const text = Array.from({ length: Z }, () => new Array(X).fill(""));
  for (let i = 0; i < P; i++) {
    const bi = Math.floor(i / cols), bj = i % cols;
    for (let j = 0; j < P; j++) {
      const y = bi * (rows + 1) + Math.floor(j / cols), x = bj * (cols + 1) + (j % cols);
      z[y][x] = s.data[i * P + j];
      text[y][x] = plotlyText(t("position of patch {i} vs patch {j}: {v}", { i, j, v: fmt(s.data[i * P + j]) }));
    }
  }
  const heat = { type: "heatmap", z, text, hoverinfo: "text", colorscale: DIVERGING, zmin: -1, zmax: 1, hoverongaps: false,
    colorbar: { thickness: 12, outlinewidth: 0, title: { text: t("cosine"), side: "right" } } };
  plot($("pos-sim"), [heat], baseLayout({
    title: { text: t("Position embedding similarity: one map per patch"), x: 0.02, font: { size: 15 } },
    xaxis: { visible: false, constrain: "domain" },
    yaxis: { visible: false, autorange: "reversed", scaleanchor: "x", constrain: "domain" },
    margin: { l: 10, r: 10, t: 40, b: 10 },
    plot_bgcolor: "#fff",
  }));
}

keys({
  left: { does: t("mark the previous layer"), run: () => moveMark(-1, 0) },
  right: { does: t("mark the next layer"), run: () => moveMark(1, 0) },
  up: { does: t("mark the previous head"), run: () => moveMark(0, -1) },
  down: { does: t("mark the next head"), run: () => moveMark(0, 1) },
  enter: { does: t("open the marked head on the attention page"), run: () => { window.location.href = openUrl(); } },
});
initPicker(state, onTrace);
