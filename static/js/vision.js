// Shared by the ViT pages: the picture picker (gallery or upload), the trace of the picture, and the
// picture drawn in Plotly with its patch grid and an optional heatmap over it. File names and class
// labels reach the DOM through textContent only; in Plotly they go through plotlyText.

import {
  $, api, ApiError, guarded, readState, writeState, latestOnly, baseLayout, plot, plotlyText, fmt, SEQUENTIAL, MARK, setTraceExport, t, pictureCaption,
  initModelSelect,
} from "./common.js";

/**
 * @typedef {{id: number, label: string, prob: number, logit: number}} ClassProb
 * @typedef {{model: string, image: string, name: string, original: {format: string, width: number, height: number},
 *   image_url: string, image_size: number[], patch_size: number[], grid: number[], n_layers: number, n_heads: number,
 *   d_head: number, d_model: number, n_labels: number, top: ClassProb[]}} VisionTrace   (schemas.VisionTraceOut)
 */

export const DEFAULT_IMAGE = "scene-1";

/** Page state from the URL: the picture and model, plus the page's own keys. */
export function visionState(extra = {}) {
  return readState({ image: DEFAULT_IMAGE, model: "", ...extra });
}

/** The request body fields every /api/vision view takes. */
export function visionBody(state, extra = {}) {
  const body = { image: state.image, ...extra };
  if (state.model) body.model = state.model;
  return body;
}

// Upload id -> the file name this page sent it under: the server keeps no one's name with a shared trace.
const uploadNames = new Map();
// Gallery id -> its caption in the page's language (the trace names a photo in English).
const captions = new Map();

/** POST a file's bytes as the raw body; errors become ApiError with the server's reason (413, 415). */
async function uploadFile(file, model) {
  const params = new URLSearchParams({ name: file.name.slice(0, 200) });
  if (model) params.set("model", model);
  let res;
  try {
    res = await fetch(`/api/vision/upload?${params}`, {
      method: "POST",
      headers: { "Content-Type": file.type || "application/octet-stream", Accept: "application/json" },
      body: file,
    });
  } catch (e) {
    throw new ApiError(0, "network", t("Could not reach the glassbox server (or the upload was refused on the way)."));
  }
  let payload = null;
  try {
    payload = await res.json();
  } catch (e) {
    payload = null;
  }
  if (!res.ok) throw new ApiError(res.status, payload && payload.error, (payload && payload.detail) || t("The server answered {status}.", { status: res.status }));
  uploadNames.set(payload.image, payload.name);
  return payload;
}

/**
 * Wire the picker and load the first picture. onTrace(trace) runs for every new picture (under
 * guarded(), stale answers dropped); it should draw the page.
 */
export async function initPicker(state, onTrace) {
  const seq = latestOnly();
  const sel = $("gallery");

  async function show(getTrace) {
    const my = seq.start();
    await guarded(async () => {
      const vt = await getTrace();
      if (seq.isStale(my)) return;
      state.image = vt.image;
      markPicture(sel, vt);
      writeState(state);
      await onTrace(vt);
      setTraceExport("/api/vision/export", visionBody(state));
    });
  }

  await initModelSelect(state, "vision");
  let items = [];
  try {
    items = (await api("/api/vision/gallery")).items;
  } catch (e) {
    items = [];
  }
  sel.replaceChildren();
  const kinds = { scene: t("scene"), photo: t("photo") };
  for (const it of items) {
    const o = document.createElement("option");
    o.value = it.id;
    o.textContent = `${pictureCaption(it)} (${kinds[it.kind] || it.kind})`;
    captions.set(it.id, pictureCaption(it));
    sel.append(o);
  }
  sel.addEventListener("change", () => show(() => api("/api/vision/trace", visionBody({ ...state, image: sel.value }))));
  $("upload").addEventListener("change", () => {
    const file = $("upload").files[0];
    if (file) show(() => uploadFile(file, state.model));
  });
  $("model").addEventListener("change", () => {
    state.model = $("model").value;
    show(() => api("/api/vision/trace", visionBody(state)));
  });
  await show(() => api("/api/vision/trace", visionBody(state)));
}

/** The picture's name and size under the picker; an upload gets its own entry in the select. */
function markPicture(sel, vt) {
  const name = uploadNames.get(vt.image) || captions.get(vt.image) || vt.name;
  $("picture-name").textContent = name;
  const o = vt.original || {};
  $("picture-info").textContent = t("({format} {width} × {height}, read by {model} at {w} × {h} px, {rows} × {cols} patches of {patch} px)", {
    format: o.format || "?", width: o.width || "?", height: o.height || "?", model: vt.model, w: vt.image_size[1],
    h: vt.image_size[0], rows: vt.grid[0], cols: vt.grid[1], patch: vt.patch_size[0],
  });
  let opt = [...sel.options].find((x) => x.value === vt.image);
  if (!opt) {
    [...sel.options].filter((x) => x.dataset.upload).forEach((x) => x.remove());
    opt = document.createElement("option");
    opt.value = vt.image;
    opt.dataset.upload = "1";
    sel.prepend(opt);
  }
  // Set each time: the same picture uploaded again under another file name keeps its id.
  if (opt.dataset.upload) opt.textContent = t("Your upload: {name}", { name });
  sel.value = vt.image;
}

// ---------------------------------------------------------------------------------------------
// Patches

/** "patch 12 (row 1, col 4)" */
export function patchName(vt, i) {
  const cols = vt.grid[1];
  return t("patch {i} (row {row}, col {col})", { i, row: Math.floor(i / cols), col: i % cols });
}

/** Token index (0 = CLS, 1 + i = patch i) as words. */
export function tokenName(t, token) {
  return token === 0 ? "CLS" : patchName(t, token - 1);
}

/** Fill the #from select with CLS and every patch; returns the clamped token. */
export function fillFrom(t, token) {
  const sel = $("from");
  const n = 1 + t.grid[0] * t.grid[1];
  if (sel.options.length !== n) {
    sel.replaceChildren();
    for (let i = 0; i < n; i++) {
      const o = document.createElement("option");
      o.value = String(i);
      o.textContent = tokenName(t, i);
      sel.append(o);
    }
  }
  const v = token >= 0 && token < n ? token : 0;
  sel.value = String(v);
  return v;
}

/** The patch under a Plotly point of the picture figure (its x, y are pixels), or -1. */
export function patchAt(t, p) {
  const [ph, pw] = t.patch_size;
  const r = Math.floor(p.y / ph);
  const c = Math.floor(p.x / pw);
  if (!(r >= 0 && r < t.grid[0] && c >= 0 && c < t.grid[1])) return -1;
  return r * t.grid[1] + c;
}

/** A flat [P] vector -> [rows][cols] (patches are row by row). */
export function toGrid(t, values) {
  const [rows, cols] = t.grid;
  return Array.from({ length: rows }, (_, r) => Array.from(values.slice(r * cols, (r + 1) * cols)));
}

const CLEAR = [[0, "rgba(0,0,0,0)"], [1, "rgba(0,0,0,0)"]];

/**
 * The picture with its patch grid, and `heat` ([rows][cols] or null) drawn over it at `opacity`.
 * Every patch is hoverable and clickable (an invisible heatmap when there is no heat).
 * `selected`: a patch index to outline. Returns [data, layout].
 */
export function pictureFigure(vt, { heat = null, opacity = 0.6, selected = -1, valueName = t("value"), zmax, title = "" } = {}) {
  const [H, W] = vt.image_size;
  const [ph, pw] = vt.patch_size;
  const [rows, cols] = vt.grid;
  const xs = Array.from({ length: cols }, (_, c) => (c + 0.5) * pw);
  const ys = Array.from({ length: rows }, (_, r) => (r + 0.5) * ph);
  const z = heat || Array.from({ length: rows }, (_, r) => Array.from({ length: cols }, (_, c) => r * cols + c));
  const text = z.map((row, r) =>
    row.map((v, c) => {
      const name = patchName(vt, r * cols + c);
      return heat ? `${name}<br>${plotlyText(valueName)}: ${fmt(v)}` : name;
    }),
  );
  const trace = {
    type: "heatmap", x: xs, y: ys, z, text, hoverinfo: "text", xgap: 0, ygap: 0,
    opacity: heat ? opacity : 1, colorscale: heat ? SEQUENTIAL : CLEAR, showscale: !!heat, zmin: 0,
    colorbar: { thickness: 12, outlinewidth: 0, len: 0.9, title: { text: plotlyText(valueName), side: "right" } },
  };
  if (heat && zmax !== undefined) trace.zmax = zmax;
  const shapes = [];
  for (let c = 1; c < cols; c++) shapes.push({ type: "line", x0: c * pw, x1: c * pw, y0: 0, y1: H, line: { color: "rgba(60,60,60,0.35)", width: 1 } });
  for (let r = 1; r < rows; r++) shapes.push({ type: "line", x0: 0, x1: W, y0: r * ph, y1: r * ph, line: { color: "rgba(60,60,60,0.35)", width: 1 } });
  if (selected >= 0) {
    const r = Math.floor(selected / cols), c = selected % cols;
    shapes.push({ type: "rect", x0: c * pw, x1: (c + 1) * pw, y0: r * ph, y1: (r + 1) * ph, line: { color: MARK, width: 3 } });
  }
  const layout = baseLayout({
    title: title ? { text: plotlyText(title), x: 0.02, font: { size: 15 } } : undefined,
    margin: { l: 10, r: 10, t: title ? 40 : 10, b: 10 },
    xaxis: { range: [0, W], visible: false, constrain: "domain" },
    yaxis: { range: [H, 0], visible: false, scaleanchor: "x", constrain: "domain" },
    images: [{ source: vt.image_url, xref: "x", yref: "y", x: 0, y: 0, sizex: W, sizey: H, sizing: "stretch", layer: "below" }],
    shapes,
    plot_bgcolor: "rgba(0,0,0,0)",
  });
  return [[trace], layout];
}

/** Draw a picture figure into gd; the first draw wires hover/click to onHover(i)/onClick(i) (patch indices). */
export function drawPicture(gd, figure, { onClick = null, onHover = null, trace = null } = {}) {
  const [data, layout] = figure;
  return plot(gd, data, layout).then(() => {
    if (gd.dataset.wired) return;
    gd.dataset.wired = "1";
    const at = (ev) => (ev && ev.points && ev.points[0] ? patchAt(trace(), ev.points[0]) : -1);
    if (onClick) gd.on("plotly_click", (ev) => { const i = at(ev); if (i >= 0) onClick(i); });
    if (onHover) gd.on("plotly_hover", (ev) => { const i = at(ev); if (i >= 0) onHover(i); });
  });
}
