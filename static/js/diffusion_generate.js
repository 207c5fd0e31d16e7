// /diffusion/generate: a text-to-image run streamed step by step; a scrubber, play, per-word
// cross-attention over x̂₀, a strip of steps, two runs compared, and the runs' paths in latent space.
import {
  $, api, ApiError, readState, writeState, showError, clearError, onRunForm, plotlyText, fmt, baseLayout, plot, keys, setTraceExport, t,
} from "./common.js";
import { initDiffusionModel, runBody, streamRun, decodeStep, channel, tokenLabel, pictureWithHeat, heatRow, react, absMax } from "./diffusion.js";

const STRIP = [1, 2, 3, 5, 8, 10, 15, 20, 30, 40]; // step numbers shown in the strip, when the run has them
const state = readState({
  prompt: "a large red star at the top left", negative: "", seed: 0, steps: 20, guidance: 5, scheduler: "default",
  model: "", step: -1, word: -1, ch: 0, cmp: "", b: null, more: 0,
});
let head = null; // the run's head event: tokens, notices, sizes
let steps = []; // decoded steps of run A
let stepsB = []; // ... of run B (compare)
let finished = false;
let finishedB = false;
let hoverWord = null; // a token hovered (shown until the pointer leaves); state.word is the pinned one
let controller = null; // aborts every stream of the current run
let timer = null; // play
let shown = 0; // numbers the steps shown, so a late exact decode never lands on another step
// The stream carries fast previews (a linear map of the latent); a finished run's steps are decoded
// exactly by the VAE on demand, once each: key [run body, step, latent|x0] -> Promise of a data URL.
const exact = new Map();

function exactImage(body, i, which) {
  const key = JSON.stringify([body, i, which]);
  if (!exact.has(key)) {
    const p = api("/api/diffusion/decode", { ...body, step: i, which }).then((r) => r.image);
    p.catch(() => exact.delete(key)); // evicted from the server's cache: keep the preview, ask again later
    exact.set(key, p);
  }
  return exact.get(key);
}

/** Put the exact picture of step i (run A, or B) where the fast preview is, if it is still shown. */
function upgrade(i) {
  const my = ++shown;
  const fresh = (fn) => (url) => { if (my === shown) fn(url); };
  const quiet = () => {}; // the fast preview stays; nothing is wrong with the page
  exactImage(runBody(state), i, "latent").then(fresh((url) => { $("latent-img").src = url; }), quiet);
  exactImage(runBody(state), i, "x0").then(fresh((url) => { steps[i].exact_x0 = url; drawX0(i); }), quiet);
  if (!$("compare-view").hidden) {
    exactImage(runBody(state), i, "x0").then(fresh((url) => { $("a-img").src = url; }), quiet);
    if (finishedB && stepsB[i]) exactImage(bodyB(), i, "x0").then(fresh((url) => { $("b-img").src = url; }), quiet);
  }
}

// ---------------------------------------------------------------------------------------------
// Running

function readForm() {
  state.prompt = $("prompt").value;
  state.negative = $("negative").value;
  state.seed = Number($("seed").value);
  state.steps = Number($("steps").value);
  state.guidance = Number($("guidance").value);
  state.scheduler = $("scheduler").value;
  state.model = $("model").value || state.model;
}

function fillForm() {
  $("prompt").value = state.prompt;
  $("negative").value = state.negative;
  $("seed").value = String(state.seed);
  $("steps").value = String(state.steps);
  $("guidance").value = String(state.guidance);
  $("scheduler").value = state.scheduler;
  $("channel").value = String(state.ch);
  if (state.cmp) $("cmp").value = state.cmp;
  if (state.b !== null) $("b").value = String(state.b);
}

function setProgress(done, total, text) {
  $("progress").max = Math.max(1, total);
  $("progress").value = done;
  $("progress-text").textContent = text;
}

async function run({ keepStep = false } = {}) {
  stop();
  if (controller) controller.abort();
  controller = new AbortController();
  const signal = controller.signal;
  clearError();
  head = null;
  steps = [];
  stepsB = [];
  finished = false;
  if (!keepStep) state.step = -1;
  $("compare-view").hidden = true;
  $("notice").hidden = true;
  $("step").disabled = true;
  $("run").disabled = true;
  writeState(state);
  const exported = runBody(state); // the run this stream shows, for "Download trace" once it is done
  setTraceExport(null);
  const started = performance.now();
  setProgress(0, state.steps, t("Waiting for the first step…"));
  try {
    await streamRun(runBody(state), {
      head: (h) => {
        head = h;
        const notes = [];
        if (h.notice) notes.push(h.notice);
        if (h.steps !== h.steps_asked) {
          notes.push(t("This scheduler calls the model {n} times for {asked} steps (PNDM repeats one timestep); each call is shown.", { n: h.steps, asked: h.steps_asked }));
        }
        if (notes.length) {
          $("notice").textContent = notes.join(" ");
          $("notice").hidden = false;
        }
        if (state.word >= h.tokens.length) state.word = -1;
        renderWords();
      },
      step: (s) => {
        steps.push(decodeStep(s));
        const n = steps.length;
        const progress = n === 1
          ? t("Step {n} of {total} (first after {ms} ms)", { n, total: head.steps, ms: Math.round(performance.now() - started) })
          : t("Step {n} of {total}", { n, total: head.steps });
        setProgress(n, head.steps, progress);
        $("step").max = String(n - 1);
        if (state.step === -1 || state.step >= n - 1 || !keepStep) show(n - 1, { live: true });
        renderStrip();
      },
      done: () => {
        finished = true;
        setTraceExport("/api/diffusion/export", exported);
        setProgress(steps.length, steps.length, t("Done: {n} steps in {s} s", { n: steps.length, s: ((performance.now() - started) / 1000).toFixed(1) }));
      },
    }, signal);
  } catch (e) {
    if (e.name === "AbortError") return;
    showError(e instanceof ApiError ? e.message : t("Something went wrong in the page: {message}", { message: e.message }));
    if (!(e instanceof ApiError)) console.warn(e);
    return;
  } finally {
    if (!signal.aborted) $("run").disabled = false;
  }
  $("step").disabled = false;
  const at = state.step >= 0 && state.step < steps.length ? state.step : steps.length - 1;
  show(at);
  upgradeStrip();
  try {
    if (state.cmp && state.b !== null) await compare(signal);
    await drawPaths(signal);
  } catch (e) {
    if (e.name !== "AbortError") showError(e.message);
  }
}

function bodyB() {
  return runBody(state, state.cmp === "guidance" ? { guidance: Number(state.b) } : { seed: Math.max(0, Math.round(Number(state.b))) });
}

/** Run B: run A with one setting changed. */
async function compare(signal) {
  stepsB = [];
  finishedB = false;
  $("compare-view").hidden = false;
  const body = bodyB();
  const setting = (g, s) => (state.cmp === "guidance" ? t("guidance {g}", { g }) : t("seed {s}", { s }));
  const what = setting(body.guidance, body.seed);
  $("a-caption").textContent = `A: ${setting(state.guidance, state.seed)}`;
  $("b-caption").textContent = t("B: {what} (running…)", { what });
  try {
    await streamRun(body, {
      step: (s) => {
        stepsB.push(decodeStep(s));
        $("b-caption").textContent = t("B: {what} (step {n})", { what, n: stepsB.length });
        showCompare();
      },
      done: () => {
        finishedB = true;
        $("b-caption").textContent = `B: ${what}`;
      },
    }, signal);
  } catch (e) {
    if (e.name === "AbortError") throw e;
    showError(e instanceof ApiError ? e.message : t("Something went wrong in the page: {message}", { message: e.message }));
  }
  showCompare();
  upgrade(shownIndex());
}

/** The runs on the latent map: A, B when compared, then `more` runs with the next seeds. */
function mapRuns() {
  const runs = [runBody(state)];
  if (state.cmp && state.b !== null && stepsB.length) runs.push(bodyB());
  for (let k = 1; k <= state.more && runs.length < 8; k++) runs.push(runBody(state, { seed: (state.seed + k) % 2 ** 32 }));
  return runs;
}

async function drawPaths(signal) {
  const runs = mapRuns();
  // Runs not yet computed (added seeds, or evicted from the cache) are run first, without drawing them.
  for (const body of runs.slice(1)) {
    if (signal.aborted) return;
    $("progress-text").textContent = t("Running seed {seed}, guidance {guidance} for the map…", body);
    await streamRun(body, {}, signal);
  }
  if (signal.aborted) return;
  let r;
  try {
    r = await api("/api/diffusion/paths", { runs });
  } catch (e) {
    showError(e.message);
    return;
  }
  if (signal.aborted) return;
  $("progress-text").textContent = t("Done: {n} steps.", { n: steps.length });
  // The runs' names in the page's language (the answer's `labels` say the same in English).
  const names = runs.map((body) => t("seed {seed}, guidance {guidance}", body));
  const data = r.points.map((pts, i) => ({
    type: "scatter", mode: "lines+markers", name: names[i],
    x: pts.map((p) => p[0]), y: pts.map((p) => p[1]),
    text: pts.map((_, k) => `${plotlyText(names[i])}<br>${t("step {n}", { n: k + 1 })}`), hoverinfo: "text",
    marker: { size: pts.map((_, k) => (k === 0 || k === pts.length - 1 ? 11 : 6)) },
  }));
  const pc = (k) => t("PC {k} ({p} % of the variance)", { k: k + 1, p: (100 * r.explained[k]).toFixed(0) });
  plot($("paths"), data, baseLayout({
    xaxis: { title: { text: pc(0) }, zeroline: false }, yaxis: { title: { text: pc(1) }, zeroline: false },
    margin: { l: 70, r: 20, t: 20, b: 90 }, legend: { orientation: "h", yref: "container", y: 0, yanchor: "bottom" },
  }));
}

// ---------------------------------------------------------------------------------------------
// Showing a step

function currentWord() {
  return hoverWord !== null ? hoverWord : state.word;
}

function show(i, { live = false } = {}) {
  if (!steps.length) return;
  const n = steps.length;
  i = Math.min(Math.max(0, i), n - 1);
  if (!live) state.step = i;
  $("step").value = String(i);
  const s = steps[i];
  $("step-out").textContent = t("{n} of {total} (t = {t})", { n: i + 1, total: head.steps, t: Math.round(s.timestep) });
  $("latent-img").src = s.preview;
  drawX0(i);
  drawNoise(i);
  showCompare();
  markStrip(i);
  if (!live) writeState(state);
  if (finished && !live) upgrade(i);
}

function shownIndex() {
  return Number($("step").value);
}

function drawX0(i) {
  const s = steps[i];
  const w = currentWord();
  const side = head.image_size;
  const url = s.exact_x0 || s.preview_x0;
  $("x0").dataset.kind = s.exact_x0 ? "VAE decode" : "fast preview";
  const kind = s.exact_x0 ? t("VAE decode") : t("fast preview");
  if (w < 0 || w >= s.words.shape[0]) {
    $("x0-caption").textContent = t("Predicted clean image x̂₀ at step {n} ({kind}). Hover a token above to see where the picture looks at it.", { n: i + 1, kind });
    react($("x0"), pictureWithHeat(url, side, null));
    $("x0").dataset.word = "";
    return;
  }
  const map = channel(s.words, w);
  let peak = 0;
  for (const row of map) for (const v of row) peak = Math.max(peak, v);
  const label = tokenLabel(head.tokens[w], w);
  $("x0-caption").textContent = t("Where the picture looks at “{word}” at step {n} (cross-attention, mean of layers and heads; peak {peak}; {kind})",
    { word: label, n: i + 1, peak: fmt(peak, 2), kind });
  $("x0").dataset.word = label;
  react($("x0"), pictureWithHeat(url, side, map, { valueName: t("attention to {word}", { word: label }) }));
}

function drawNoise(i) {
  const s = steps[i];
  const c = state.ch;
  const diff = { shape: s.noise_cond.shape, data: s.noise_cond.data.map((v, k) => v - s.noise_uncond.data[k]) };
  const m = absMax(s.latent, s.noise, s.noise_cond, s.noise_uncond);
  react($("noise"), heatRow([
    { title: t("latent xₜ₋₁"), z: channel(s.latent, c) },
    { title: t("ε uncond"), z: channel(s.noise_uncond, c) },
    { title: t("ε cond"), z: channel(s.noise_cond, c) },
    { title: t("cond − uncond"), z: channel(diff, c) },
    { title: t("ε guided (g = {g})", { g: state.guidance }), z: channel(s.noise, c) },
  ], { zmin: -m, zmax: m }));
}

function showCompare() {
  if ($("compare-view").hidden) return;
  const i = shownIndex();
  if (steps[i]) $("a-img").src = steps[i].exact_x0 || steps[i].preview_x0;
  const b = stepsB[Math.min(i, stepsB.length - 1)];
  if (b) $("b-img").src = b.preview_x0;
}

// ---------------------------------------------------------------------------------------------
// Tokens, strip, play

function renderWords() {
  const box = $("words");
  box.replaceChildren();
  head.tokens.forEach((tok, i) => {
    const chip = document.createElement("button");
    chip.type = "button";
    chip.className = "token";
    chip.dataset.pos = String(i);
    if (i === state.word) chip.classList.add("selected");
    const pos = document.createElement("span");
    pos.className = "pos";
    pos.textContent = String(i);
    const txt = document.createElement("span");
    txt.className = "txt";
    txt.textContent = tokenLabel(tok, i); // literal text, never HTML
    txt.translate = false; // a token is data
    chip.append(pos, txt);
    const hover = (on) => {
      hoverWord = on ? i : null;
      if (steps.length) drawX0(shownIndex());
    };
    chip.addEventListener("mouseenter", () => hover(true));
    chip.addEventListener("mouseleave", () => hover(false));
    chip.addEventListener("focus", () => hover(true));
    chip.addEventListener("blur", () => hover(false));
    chip.addEventListener("click", () => pinWord(state.word === i ? -1 : i));
    box.append(chip);
  });
  pinWord(state.word, { quiet: true });
}

/** Keep word w's map over x̂₀ (-1: none); `quiet` when nothing is shown yet to redraw or record. */
function pinWord(w, { quiet = false } = {}) {
  state.word = w;
  $("words").querySelectorAll(".token").forEach((c) => {
    const on = Number(c.dataset.pos) === w;
    c.classList.toggle("selected", on);
    c.setAttribute("aria-pressed", String(on));
  });
  if (quiet) return;
  writeState(state);
  if (steps.length) drawX0(shownIndex());
}

/** ↑/↓: the previous or next word of the prompt, through "none" before the first. */
function stepWord(d) {
  if (!head) return;
  const w = Math.min(Math.max(-1, state.word + d), head.tokens.length - 1);
  if (w !== state.word) pinWord(w);
}

/** The strip's pictures as the VAE decodes them, once the run is done. */
function upgradeStrip() {
  const body = runBody(state);
  $("strip").querySelectorAll(".strip-item").forEach((b) => {
    exactImage(body, Number(b.dataset.step), "x0").then((url) => { b.querySelector("img").src = url; }, () => {});
  });
}

function renderStrip() {
  const box = $("strip");
  const want = STRIP.filter((k) => k <= steps.length);
  if (box.children.length === want.length) return;
  box.replaceChildren();
  for (const k of want) {
    const fig = document.createElement("button");
    fig.type = "button";
    fig.className = "strip-item";
    fig.dataset.step = String(k - 1);
    const img = document.createElement("img");
    img.src = steps[k - 1].preview_x0;
    img.alt = t("x̂₀ at step {n}", { n: k });
    const cap = document.createElement("span");
    cap.textContent = t("step {n}", { n: k });
    fig.append(img, cap);
    fig.addEventListener("click", () => { stop(); show(k - 1); });
    box.append(fig);
  }
  markStrip(shownIndex());
}

function markStrip(i) {
  $("strip").querySelectorAll(".strip-item").forEach((b) => b.classList.toggle("current", Number(b.dataset.step) === i));
}

function stop() {
  if (timer) clearInterval(timer);
  timer = null;
  $("play").textContent = t("▶ Play");
  $("play").setAttribute("aria-pressed", "false");
}

function play() {
  if (timer) return stop();
  if (!finished || !steps.length) return;
  if (shownIndex() >= steps.length - 1) show(0);
  $("play").textContent = t("⏸ Pause");
  $("play").setAttribute("aria-pressed", "true");
  timer = setInterval(() => {
    const i = shownIndex();
    if (i >= steps.length - 1) return stop();
    show(i + 1);
  }, Math.max(80, 2000 / steps.length));
}

// ---------------------------------------------------------------------------------------------

function wire() {
  onRunForm(() => { readForm(); run(); });
  $("step").addEventListener("input", () => { stop(); show(Number($("step").value)); });
  $("play").addEventListener("click", play);
  $("channel").addEventListener("change", () => {
    state.ch = Number($("channel").value);
    writeState(state);
    if (steps.length) drawNoise(shownIndex());
  });
  $("compare-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (!finished) return showError(t("Wait for the run to finish (or press Run), then compare."));
    clearError();
    state.cmp = $("cmp").value;
    state.b = Number($("b").value);
    writeState(state);
    const signal = controller.signal;
    try {
      await compare(signal);
      await drawPaths(signal);
    } catch (e) {
      if (e.name !== "AbortError") showError(e.message);
    }
  });
  $("cmp").addEventListener("change", () => {
    $("b").value = $("cmp").value === "guidance" ? String(Math.max(0, state.guidance === 1 ? 7.5 : 1)) : String((state.seed + 1) % 2 ** 32);
  });
  $("add-seed").addEventListener("click", async () => {
    if (!finished) return;
    state.more = Math.min(state.more + 1, 6);
    writeState(state);
    try {
      await drawPaths(controller.signal);
    } catch (e) {
      if (e.name !== "AbortError") showError(e.message);
    }
  });
  const scrub = (d) => {
    if (!steps.length) return;
    stop();
    show(shownIndex() + d);
  };
  keys({
    left: { does: t("previous denoising step"), run: () => scrub(-1) },
    right: { does: t("next denoising step"), run: () => scrub(1) },
    up: { does: t("the previous word's map over x̂₀"), run: () => stepWord(-1) },
    down: { does: t("the next word's map over x̂₀"), run: () => stepWord(1) },
    space: { does: t("play or pause the run"), run: play },
  });
}

async function init() {
  wire();
  let models;
  try {
    models = await initDiffusionModel(state);
  } catch (e) {
    showError(e.message);
    $("run").disabled = true;
    return;
  }
  const m = models.find((x) => x.name === state.model) || models[0];
  const sel = $("scheduler");
  for (const name of m.schedulers) {
    const o = document.createElement("option");
    o.value = name;
    o.textContent = name === "default" ? t("the model's own") : name;
    sel.append(o);
  }
  if (!m.schedulers.includes(state.scheduler)) state.scheduler = "default";
  fillForm();
  run({ keepStep: true });
}

init();
