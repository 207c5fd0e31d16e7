// /vision/heads: each head's mean attention distance against depth, and the position embeddings'
// cosine similarity as one small grid per patch.
import { $, api, decodeArray, baseLayout, PLOT_CONFIG, plotlyText, fmt, pageUrl, viridis } from "./common.js";
import { visionState, visionBody, initPicker } from "./vision.js";

const state = visionState();
let trace = null;

async function onTrace(t) {
  trace = t;
  const h = await api("/api/vision/heads", visionBody(state));
  drawDistance(t, decodeArray(h.distance), h.max_distance);
  drawPositions(t, decodeArray(h.position_similarity));
}

function drawDistance(t, d, maxDistance) {
  const [L, H] = d.shape;
  const data = [];
  for (let h = 0; h < H; h++) {
    const [r, g, b] = viridis(H > 1 ? h / (H - 1) : 0.5);
    const ys = Array.from({ length: L }, (_, l) => d.data[l * H + h]);
    data.push({
      type: "scatter", mode: "markers", name: `head ${h}`,
      x: ys.map((_, l) => l + (h - (H - 1) / 2) * 0.06), // spread the heads of a layer a little
      y: ys, customdata: ys.map((_, l) => [l, h]),
      marker: { size: 12, color: `rgb(${r},${g},${b})`, line: { color: "#333", width: 0.5 } },
      hovertext: ys.map((v, l) => `layer ${l}, head ${h}: ${fmt(v)} px`), hoverinfo: "text",
    });
  }
  const layout = baseLayout({
    title: { text: "Mean attention distance (click a head to open it)", x: 0.02, font: { size: 15 } },
    xaxis: { title: { text: "layer (depth)" }, tickmode: "linear", dtick: 1, gridcolor: "#e4e7eb", zeroline: false },
    yaxis: { title: { text: "mean distance, input pixels" }, range: [0, maxDistance], gridcolor: "#e4e7eb" },
    margin: { l: 70, r: 10, t: 40, b: 55 },
    legend: { orientation: "h", y: -0.2 },
  });
  const gd = $("distance");
  Plotly.react(gd, data, layout, PLOT_CONFIG).then(() => {
    if (gd.dataset.wired) return;
    gd.dataset.wired = "1";
    gd.on("plotly_click", (ev) => {
      const p = ev && ev.points && ev.points[0];
      if (p && p.customdata) window.location.href = pageUrl("/vision/attention", { image: state.image, model: state.model, layer: p.customdata[0], head: p.customdata[1] });
    });
  });
}

/** One rows×cols map per patch (its similarity to every patch), laid out on the grid with one-cell gaps. */
function drawPositions(t, s) {
  const [rows, cols] = t.grid;
  const P = rows * cols;
  const Z = (rows + 1) * rows - 1, X = (cols + 1) * cols - 1;
  const z = Array.from({ length: Z }, () => new Array(X).fill(null));
  const text = Array.from({ length: Z }, () => new Array(X).fill(""));
  for (let i = 0; i < P; i++) {
    const bi = Math.floor(i / cols), bj = i % cols;
    for (let j = 0; j < P; j++) {
      const y = bi * (rows + 1) + Math.floor(j / cols), x = bj * (cols + 1) + (j % cols);
      z[y][x] = s.data[i * P + j];
      text[y][x] = plotlyText(`position of patch ${i} vs patch ${j}: ${fmt(s.data[i * P + j])}`);
    }
  }
  const heat = { type: "heatmap", z, text, hoverinfo: "text", colorscale: "Viridis", zmin: -1, zmax: 1, hoverongaps: false,
    colorbar: { thickness: 12, outlinewidth: 0, title: { text: "cosine", side: "right" } } };
  Plotly.react($("pos-sim"), [heat], baseLayout({
    title: { text: "Position embedding similarity: one map per patch", x: 0.02, font: { size: 15 } },
    xaxis: { visible: false, constrain: "domain" },
    yaxis: { visible: false, autorange: "reversed", scaleanchor: "x", constrain: "domain" },
    margin: { l: 10, r: 10, t: 40, b: 10 },
    plot_bgcolor: "#fff",
  }), PLOT_CONFIG);
}

initPicker(state, onTrace);
