// /text/heads: every layer × head as one Plotly figure of small heatmaps; click one to open it, or
// mark one with the arrow keys (layer, head) and press Enter.
import {
  $, readState, writeState, latestOnly, runText, onRunForm, initModelSelect, decodeArray, toNested, sliceFirst,
  baseLayout, reactWithClick, pageUrl, keys, t, SEQUENTIAL, MARK, DEFAULT_TEXT,
} from "./common.js";

const state = readState({ text: DEFAULT_TEXT, model: "", layer: 0, head: 0 }); // layer, head: the marked one
let grid = null; // the last /api/text/grid answer
const seq = latestOnly();

async function run() {
  await runText(state, seq, "/api/text/grid", async (g) => {
    grid = g;
    moveMark(0, 0);
    await draw(g);
  });
}

/** The marked head's page. */
function openUrl() {
  return pageUrl("/text/attention", { text: state.text, model: state.model, layer: state.layer, head: state.head });
}

/** Move the mark by (layers, heads), inside the grid; the link and the URL follow it. */
function moveMark(dl, dh) {
  if (!grid) return;
  state.layer = Math.min(Math.max(0, (state.layer | 0) + dl), grid.n_layers - 1);
  state.head = Math.min(Math.max(0, (state.head | 0) + dh), grid.n_heads - 1);
  writeState(state);
  const link = $("open-head");
  link.href = openUrl();
  link.textContent = t("Open layer {layer}, head {head} →", state);
  link.hidden = false;
  if (dl || dh) draw(grid);
}

function draw(g) {
  const L = g.n_layers;
  const H = g.n_heads;
  const s = g.size;
  const all = decodeArray(g.attention); // [L, H, s, s]
  const data = [];
  const layout = baseLayout({
    grid: { rows: L, columns: H, pattern: "independent", roworder: "top to bottom", xgap: 0.06, ygap: 0.06 },
    margin: { l: 70, r: 20, t: 40, b: 20 },
    plot_bgcolor: "#eef1f4",
    annotations: [],
    hovermode: "closest",
  });
  const hover = g.pooled // %{…} are Plotly's: the bin or token numbers and the value under the pointer
    ? t("layer {layer}, head {head}<br>query bin %{y} → key bin %{x}<br>attention %{z:.3f}")
    : t("layer {layer}, head {head}<br>query token %{y} → key token %{x}<br>attention %{z:.3f}");
  const open = t("click to open");
  for (let l = 0; l < L; l++) {
    const layer = sliceFirst(all, l);
    for (let h = 0; h < H; h++) {
      const n = l * H + h + 1;
      const z = toNested(sliceFirst(layer, h)).map((row, i) => row.map((v, j) => (j > i ? null : v)));
      data.push({
        type: "heatmap",
        z,
        xaxis: `x${n === 1 ? "" : n}`,
        yaxis: `y${n === 1 ? "" : n}`,
        colorscale: SEQUENTIAL,
        zmin: 0,
        zmax: 1,
        showscale: n === 1,
        colorbar: { thickness: 10, len: 0.5, outlinewidth: 0, title: { text: t("attention"), side: "right" } },
        hovertemplate: `${hover.replace("{layer}", l).replace("{head}", h)}<extra>${open}</extra>`,
      });
      layout[`xaxis${n === 1 ? "" : n}`] = { showticklabels: false, ticks: "", showgrid: false, zeroline: false, constrain: "domain" };
      layout[`yaxis${n === 1 ? "" : n}`] = {
        showticklabels: false, ticks: "", showgrid: false, zeroline: false, autorange: "reversed",
        scaleanchor: `x${n === 1 ? "" : n}`, constrain: "domain",
      };
      if (l === 0) {
        layout.annotations.push({
          text: t("head {head}", { head: h }), showarrow: false, xref: `x${n === 1 ? "" : n} domain`, yref: `y${n === 1 ? "" : n} domain`,
          x: 0.5, y: 1.02, xanchor: "center", yanchor: "bottom", font: { size: 13 },
        });
      }
      if (h === 0) {
        layout.annotations.push({
          text: t("layer {layer}", { layer: l }), showarrow: false, xref: `x${n === 1 ? "" : n} domain`, yref: `y${n === 1 ? "" : n} domain`,
          x: -0.08, y: 0.5, xanchor: "right", yanchor: "middle", font: { size: 13 },
        });
      }
    }
  }
  const m = state.layer * H + state.head + 1;
  const ref = m === 1 ? "" : m;
  layout.shapes = [{
    type: "rect", xref: `x${ref} domain`, yref: `y${ref} domain`, x0: -0.04, x1: 1.04, y0: -0.04, y1: 1.04,
    line: { color: MARK, width: 3 }, fillcolor: "rgba(0,0,0,0)",
  }];
  const gd = $("grid");
  const width = gd.clientWidth || 1000;
  const cell = Math.min(190, Math.max(60, (width - 120) / H));
  layout.height = Math.round(L * cell * 1.06 + 70);
  $("grid-note").textContent = (g.pooled
    ? t("{layers} layers × {heads} heads = {n} heatmaps, each {s}×{s} (the text is long, so each is averaged down to this size). Click a heatmap to open that head on its own, or mark one with the arrow keys and press Enter.", { layers: L, heads: H, n: L * H, s })
    : t("{layers} layers × {heads} heads = {n} heatmaps, each {s}×{s} (one row and column per token). Click a heatmap to open that head on its own, or mark one with the arrow keys and press Enter.", { layers: L, heads: H, n: L * H, s }));
  return reactWithClick(gd, data, layout, (p) => {
    const H = gd.data.length && gd.layout.grid ? gd.layout.grid.columns : 1;
    const layer = Math.floor(p.curveNumber / H);
    const head = p.curveNumber % H;
    window.location.href = pageUrl("/text/attention", { text: state.text, model: state.model, layer, head });
  });
}

$("text").value = state.text;
onRunForm(run);
keys({
  left: { does: t("mark the previous layer"), run: () => moveMark(-1, 0) },
  right: { does: t("mark the next layer"), run: () => moveMark(1, 0) },
  up: { does: t("mark the previous head"), run: () => moveMark(0, -1) },
  down: { does: t("mark the next head"), run: () => moveMark(0, 1) },
  enter: { does: t("open the marked head"), run: () => { window.location.href = openUrl(); } },
});
$("model").addEventListener("change", run);
initModelSelect(state).then(run);
