// /diffusion/forward: a drawn scene, the VAE's latent of it, and the noise of timestep t added
// (x_t = √ᾱ·z + √(1−ᾱ)·ε), beside the same noise level on the pixels.
import { $, api, readState, writeState, guarded, latestOnly, decodeArray, fmt, keys, stepRange, t } from "./common.js";
import { initDiffusionModel, channel, heatRow, react, absMax } from "./diffusion.js";

const state = readState({ scene: 0, t: 500, seed: 0, model: "" });
const seq = latestOnly();

async function load() {
  const my = seq.start();
  await guarded(async () => {
    const body = { scene: state.scene, t: state.t, seed: state.seed };
    if (state.model) body.model = state.model;
    const r = await api("/api/diffusion/forward", body);
    if (seq.isStale(my)) return;
    writeState(state);
    draw(r);
  }, t("Noising…"));
}

function draw(r) {
  $("caption").textContent = r.caption; // the scene's caption, as text
  $("clean").src = r.image;
  $("recon").src = r.reconstruction;
  $("noisy").src = r.noisy;
  $("noisy-pixels").src = r.noisy_pixels;
  const a = r.alpha_bar;
  $("formula").textContent = t("t = {t}: ᾱ = {a}, so x_t = {zs}·z + {es}·ε — {pc} % of the variance is still the picture.", {
    t: r.t, a: a.toFixed(4), zs: fmt(Math.sqrt(a), 3), es: fmt(Math.sqrt(1 - a), 3), pc: (100 * a).toFixed(1),
  });
  const z = decodeArray(r.latent);
  const zt = decodeArray(r.noisy_latent);
  const [C, h, w] = z.shape;
  $("latent-shape").textContent = `${$("clean").naturalWidth || "?"} px → ${C} × ${h} × ${w}`;
  const m = absMax(z, zt);
  const panels = [];
  for (let c = 0; c < C; c++) panels.push({ title: t("z, channel {c}", { c }), z: channel(z, c) });
  for (let c = 0; c < C; c++) panels.push({ title: t("x_t, channel {c}", { c }), z: channel(zt, c) });
  react($("latents"), heatRow(panels, { zmin: -m, zmax: m, rows: 2 }));
}

function wire() {
  $("scene").value = String(state.scene);
  $("t").value = String(state.t);
  $("t-out").textContent = String(state.t);
  $("noise-seed").value = String(state.seed);
  $("t").addEventListener("input", () => {
    state.t = Number($("t").value);
    $("t-out").textContent = String(state.t);
    load();
  });
  $("scene").addEventListener("change", () => {
    state.scene = Math.min(10000, Math.max(0, Math.round(Number($("scene").value) || 0)));
    $("scene").value = String(state.scene);
    load();
  });
  const scene = (s) => {
    state.scene = s;
    $("scene").value = String(s);
    load();
  };
  $("next-scene").addEventListener("click", () => scene((state.scene + 1) % 10001));
  keys({
    left: { does: t("timestep t − 50 (less noise)"), run: () => stepRange($("t"), -50) },
    right: { does: t("timestep t + 50 (more noise)"), run: () => stepRange($("t"), 50) },
    up: { does: t("the previous scene"), run: () => state.scene > 0 && scene(state.scene - 1) },
    down: { does: t("the next scene"), run: () => scene((state.scene + 1) % 10001) },
  });
  $("noise-seed").addEventListener("change", () => {
    state.seed = Math.max(0, Math.round(Number($("noise-seed").value) || 0));
    load();
  });
  $("forward-form").addEventListener("submit", (ev) => ev.preventDefault());
}

async function init() {
  wire();
  try {
    await initDiffusionModel(state);
  } catch (e) {
    await guarded(() => Promise.reject(e));
    return;
  }
  load();
}

init();
