// Shared by the Stable Diffusion pages: the served diffusion models, reading a streamed run
// (Server-Sent Events over fetch, so a refused run still arrives as a JSON error), and the
// picture-with-heatmap figure the word maps are drawn on.
import { $, api, ApiError, decodeArray, baseLayout, plot, plotlyText, fmt, t, DIVERGING } from "./common.js";

/** Fill the hidden #model select with the served diffusion models; returns the model list. */
export async function initDiffusionModel(state) {
  const models = (await api("/api/models")).diffusion || [];
  const sel = $("model");
  sel.replaceChildren();
  for (const m of models) {
    const o = document.createElement("option");
    o.value = m.name;
    o.textContent = `${m.name} (${m.image_size} px)`;
    sel.append(o);
  }
  if (!models.some((m) => m.name === state.model)) state.model = models.length ? models[0].name : "";
  sel.value = state.model;
  sel.closest(".field").hidden = models.length < 2;
  if (!models.length) throw new ApiError(404, "no model", t("This server serves no text-to-image model (start it with --sd NAME_OR_PATH)."));
  return models;
}

/** The request body of a run from a page state (and overrides). */
export function runBody(state, extra = {}) {
  const body = {
    prompt: state.prompt, negative: state.negative, seed: state.seed, steps: state.steps,
    guidance: state.guidance, scheduler: state.scheduler, ...extra,
  };
  if (state.model) body.model = state.model;
  return body;
}

/**
 * POST /api/diffusion/run and call handlers.head(data), .step(data), .done(data) as the events
 * arrive. Resolves when the stream ends; rejects with ApiError on a refused run or an `error` event.
 * Aborting `signal` closes the stream, which stops the run on the server if nobody else watches it.
 */
export async function streamRun(body, handlers, signal) {
  let res;
  try {
    res = await fetch("/api/diffusion/run", {
      method: "POST", headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
      body: JSON.stringify(body), signal,
    });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, "network", t("Could not reach the glassbox server. Is it still running?"));
  }
  if (!res.ok) {
    let payload = null;
    try { payload = await res.json(); } catch (e) { payload = null; }
    const detail = payload && (payload.detail || payload.error);
    const retry = res.headers.get("Retry-After");
    const msg = typeof detail === "string" ? detail : t("The server answered {status}.", { status: res.status });
    throw new ApiError(res.status, payload && payload.error, retry ? t("{message} Try again in {s} s.", { message: msg, s: retry }) : msg);
  }
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      let event = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) event = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      const payload = data ? JSON.parse(data) : {};
      if (event === "error") throw new ApiError(500, payload.error, payload.detail || t("The run failed on the server."));
      if (handlers[event]) handlers[event](payload);
    }
  }
}

/** A step as it came over the wire, with its arrays decoded once. */
export function decodeStep(s) {
  return {
    index: s.index, timestep: s.timestep, preview: s.preview, preview_x0: s.preview_x0,
    latent: decodeArray(s.latent), x0: decodeArray(s.x0), noise: decodeArray(s.noise),
    noise_cond: decodeArray(s.noise_cond), noise_uncond: decodeArray(s.noise_uncond), words: decodeArray(s.words),
  };
}

/** Channel c of a decoded [C, h, w] array as nested rows. */
export function channel(a, c) {
  const [, h, w] = a.shape;
  return Array.from({ length: h }, (_, r) => Array.from(a.data.subarray(c * h * w + r * w, c * h * w + (r + 1) * w)));
}

/** A token's label on the page: CLIP's markers named plainly. */
export function tokenLabel(tok, i) {
  if (tok === "<|startoftext|>") return "start";
  if (tok === "<|endoftext|>") return "end";
  return tok === "" ? `(${i})` : tok;
}

const CLEAR = [[0, "rgba(0,0,0,0)"], [1, "rgba(0,0,0,0)"]];
// Viridis that fades out towards 0, so the picture shows where a word gets no attention
const SEE_THROUGH = [[0, "rgba(68,1,84,0)"], [0.25, "rgba(59,82,139,0.45)"], [0.5, "rgba(33,145,140,0.65)"], [0.75, "rgba(94,201,98,0.8)"], [1, "rgba(253,231,37,0.9)"]];

/** The picture (a PNG data URL, side px) with `heat` ([h][w] or null) over it; [data, layout]. */
export function pictureWithHeat(url, side, heat, { valueName = t("attention"), zmax } = {}) {
  const n = heat ? heat.length : 1;
  const cell = side / n;
  const xs = Array.from({ length: n }, (_, i) => (i + 0.5) * cell);
  const trace = {
    type: "heatmap", x: xs, y: xs, z: heat || [[0]],
    colorscale: heat ? SEE_THROUGH : CLEAR, showscale: !!heat, zmin: 0, hoverinfo: heat ? "text" : "skip",
    text: heat ? heat.map((row, r) => row.map((v, c) => `(${c}, ${r})<br>${plotlyText(valueName)}: ${fmt(v)}`)) : undefined,
    colorbar: { thickness: 12, outlinewidth: 0, len: 0.9 },
  };
  if (heat && zmax !== undefined) trace.zmax = zmax;
  const layout = baseLayout({
    margin: { l: 10, r: 10, t: 10, b: 10 },
    xaxis: { range: [0, side], visible: false, constrain: "domain", fixedrange: true },
    yaxis: { range: [side, 0], visible: false, scaleanchor: "x", constrain: "domain", fixedrange: true },
    images: url ? [{ source: url, xref: "x", yref: "y", x: 0, y: 0, sizex: side, sizey: side, sizing: "stretch", layer: "below" }] : [],
    plot_bgcolor: "rgba(0,0,0,0)",
  });
  return [[trace], layout];
}

/** Small heatmaps side by side in one figure: panels = [{title, z}] sharing one colour scale. */
export function heatRow(panels, { zmin, zmax, rows = 1 } = {}) {
  const cols = Math.ceil(panels.length / rows);
  const data = panels.map((p, i) => ({
    type: "heatmap", z: p.z, xaxis: `x${i + 1}`, yaxis: `y${i + 1}`, colorscale: DIVERGING,
    zmin, zmax, showscale: i === 0, colorbar: { thickness: 10, outlinewidth: 0, len: 0.9 },
    hovertemplate: `${plotlyText(p.title)}<br>(%{x}, %{y}): %{z:.3f}<extra></extra>`,
  }));
  const layout = baseLayout({ margin: { l: 10, r: 10, t: 30, b: 10 }, grid: { rows, columns: cols, pattern: "independent" }, annotations: [] });
  panels.forEach((p, i) => {
    layout[`xaxis${i + 1}`] = { visible: false, constrain: "domain", fixedrange: true };
    layout[`yaxis${i + 1}`] = { visible: false, autorange: "reversed", scaleanchor: `x${i + 1}`, constrain: "domain", fixedrange: true };
    layout.annotations.push({
      text: plotlyText(p.title), xref: `x${i + 1} domain`, yref: `y${i + 1} domain`, x: 0.5, y: 1.02,
      xanchor: "center", yanchor: "bottom", showarrow: false, font: { size: 12 },
    });
  });
  return [data, layout];
}

export function react(gd, figure) {
  return plot(gd, figure[0], figure[1]);
}

/** Largest |value| of decoded arrays, for a symmetric colour scale. */
export function absMax(...arrays) {
  let m = 1e-6;
  for (const a of arrays) for (const v of a.data) if (Math.abs(v) > m) m = Math.abs(v);
  return m;
}
