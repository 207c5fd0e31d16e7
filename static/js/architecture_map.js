// The architecture map, drawn for /text|vision|diffusion/architecture (architecture.js,
// vision_architecture.js and diffusion_architecture.js call initArchitecture with their family and
// state): the served model's blocks as GET /api/<family>/architecture builds them from the real module
// tree (app/architecture.py). Boxes are DOM elements laid out in the graph's rows: a block with a page
// is a real <a> (Tab reaches it, Enter opens it), the others are focusable too, and either shows its
// details beside the map. The edges are one SVG drawn over the boxes and drawn again whenever the
// layout changes size. Module paths and labels reach the DOM through textContent only.
import { $, api, writeState, guarded, pageUrl, t } from "./common.js";
import { LANG } from "./i18n.js";

/**
 * @typedef {{id: string, kind: string, label: string, name: ?string, parent: ?string, layer: ?number,
 *   shapes: Object<string, (number|string)[]>, facts: Object<string, (number|string)>, params: number,
 *   tied: ?string, hooks: string[], link: ?string, rows: (?string)[][]}} ArchNode   (schemas.ArchNode)
 * @typedef {{source: string, target: string, kind: "flow"|"skip"|"context"|"loop", label: ?string}} ArchEdge
 * @typedef {{family: string, model: string, params: number, config: Object<string, (number|string)>,
 *   hooks: string[], rows: (?string)[][], nodes: ArchNode[], edges: ArchEdge[]}} Architecture
 *   (schemas.ArchitectureOut)
 */

const SVG_NS = "http://www.w3.org/2000/svg";
const root = $("arch");
let family = "text";
/** {model, node}: node is the block whose details are shown; set by initArchitecture. */
let state = { model: "", node: "" };

/** What each kind of box is, for the legend and the details (the box's colour says it too). */
const KINDS = {
  input: t("input"), output: t("output"), embed: t("embedding"), param: t("learned parameter"), block: t("block"),
  norm: t("normalisation"), attention: t("self-attention"), self_attention: t("self-attention"),
  cross_attention: t("cross-attention: K and V from the prompt"), mlp: t("MLP / feed-forward"), head: t("output head"),
  component: t("component"), resblock: t("ResBlock (conv + timestep)"), transformer: t("spatial transformer"),
  sample: t("down / up sampling"), vae_block: t("VAE block"), conv: t("convolution"), op: t("operation (no weights)"),
  scheduler: t("scheduler (no weights)"),
};
const EDGES = {
  flow: t("data flows"), skip: t("UNet skip connection"),
  context: t("the prompt's K and V (choose the text encoder or a cross-attention layer)"), loop: t("to the next step"),
};

/** @type {Map<string, ArchNode>} */
let byId = new Map();
/** @type {Architecture|null} */
let graph = null;
const boxes = new Map(); // node id -> its .arch-node element

function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}

/** Mark an element as notation, not words: translate="no" (browsers' translators and our tests skip it). */
function notation(e) {
  e.setAttribute("translate", "no");
  return e;
}

/** 148224 -> "148.2 k" */
function human(n) {
  for (const [scale, suffix] of [[1e9, " B"], [1e6, " M"], [1e3, " k"]]) if (n >= scale) return `${(n / scale).toFixed(1)}${suffix}`;
  return String(n);
}

const shapeText = (s) => `[${s.join(", ")}]`;

/** A capture point's short name for its tag: "blocks.2.attn.hook_pattern" -> "pattern"; an SD attention layer -> "maps". */
function hookTag(hook) {
  const i = hook.lastIndexOf("hook_");
  if (i >= 0) return hook.slice(i + 5);
  return /attn[12]$/.test(hook) ? t("attention maps") : hook;
}

/** The page link, with the page's own keys (the theme, where pageUrl keeps it) carried over. */
function linkUrl(link) {
  const u = new URL(link, window.location.origin);
  return pageUrl(u.pathname, Object.fromEntries(u.searchParams));
}

// ---------------------------------------------------------------------------------------------
// Boxes

/**
 * The boxes, row by row. A row with empty cells is a UNet's U: [down, -, up] keeps a narrow gap in the
 * middle and [-, mid, -] puts the mid block between the two columns.
 */
function rowsEl(rows) {
  const wrap = el("div", "arch-rows");
  for (const row of rows) {
    const r = el("div", "arch-row");
    // Otherwise the boxes share the row, wrapping where one would get too narrow to read.
    let columns = `repeat(auto-fit, minmax(min(${row.length > 5 ? 10 : 7.5}rem, 100%), 1fr))`;
    if (row.includes(null)) {
      const gap = row.filter((id) => id !== null).length > 1;
      columns = row.map((id) => (id === null ? (gap ? "1.5rem" : "minmax(0, 1fr)") : gap ? "minmax(0, 1fr)" : "minmax(0, 2fr)")).join(" ");
    }
    r.style.gridTemplateColumns = columns;
    for (const id of row) r.append(id === null ? el("div", "arch-empty") : nodeEl(byId.get(id)));
    wrap.append(r);
  }
  return wrap;
}

/** @param {ArchNode} n */
function nodeEl(n) {
  const group = n.rows.length > 0;
  const box = el("div", `arch-node kind-${n.kind}${group ? " arch-group" : ""}`);
  box.dataset.id = n.id;
  box.dataset.kind = n.kind;
  if (n.name) box.dataset.name = n.name;
  if (n.layer !== null) box.dataset.layer = String(n.layer);
  const head = el(n.link ? "a" : "div", "arch-head");
  if (n.link) head.href = linkUrl(n.link);
  else head.tabIndex = 0; // focusable all the same: its details are worth reading
  head.dataset.id = n.id;

  const title = el("div", "arch-title");
  title.append(el("span", "arch-label", n.label));
  if (n.params) title.append(el("span", "arch-params", n.tied ? t("{n} (shared)", { n: human(n.params) }) : human(n.params)));
  head.append(title);
  if (n.kind === "cross_attention") head.append(el("span", "arch-kv", t("K, V ← prompt")));
  const facts = Object.entries(n.facts).filter(([k]) => k !== "residual" && k !== "K, V");
  // Facts, shapes and hook tags are notation and numbers (their words come translated from the API).
  if (facts.length) head.append(notation(el("div", "arch-facts", facts.map(([k, v]) => `${k} ${v}`).join(" · "))));
  const shapes = Object.entries(n.shapes);
  if (shapes.length) head.append(notation(el("div", "arch-shapes", shapes.map(([k, s]) => `${k} ${shapeText(s)}`).join("  "))));
  if (n.hooks.length) {
    const tags = el("div", "arch-hooks");
    for (const h of n.hooks) {
      const tag = notation(el("span", "arch-hook", `◆ ${hookTag(h)}`));
      tag.title = h;
      tags.append(tag);
    }
    head.append(tags);
  }
  if (n.name && !group) head.append(el("code", "arch-path", n.name));
  head.addEventListener("focus", () => select(n.id));
  head.addEventListener("mouseenter", () => select(n.id, false));
  box.append(head);
  if (group) {
    if (n.name) head.append(el("code", "arch-path", n.name));
    box.append(rowsEl(n.rows));
  }
  boxes.set(n.id, box);
  return box;
}

// ---------------------------------------------------------------------------------------------
// Edges: one SVG over the map, in the map's own coordinates

function markers(svg) {
  const defs = document.createElementNS(SVG_NS, "defs");
  for (const kind of Object.keys(EDGES)) {
    const m = document.createElementNS(SVG_NS, "marker");
    m.setAttribute("id", `arrow-${kind}`);
    m.setAttribute("viewBox", "0 0 10 10");
    m.setAttribute("refX", "9");
    m.setAttribute("refY", "5");
    m.setAttribute("markerUnits", "userSpaceOnUse"); // the same arrow on a thin or a bold (chosen) edge
    m.setAttribute("markerWidth", "11");
    m.setAttribute("markerHeight", "11");
    m.setAttribute("orient", "auto-start-reverse");
    const p = document.createElementNS(SVG_NS, "path");
    p.setAttribute("d", "M0,0 L10,5 L0,10 z");
    p.setAttribute("class", `arrow-${kind}`);
    m.append(p);
    defs.append(m);
  }
  svg.append(defs);
}

/** The path of an edge between two boxes: down, sideways, or (a loop) around the right side and up. */
function edgePath(a, b) {
  const cx = (r) => (r.left + r.right) / 2;
  const cy = (r) => (r.top + r.bottom) / 2;
  if (b.top >= a.bottom - 1) {
    const [x1, y1, x2, y2] = [cx(a), a.bottom, cx(b), b.top];
    const d = Math.max(12, (y2 - y1) / 2);
    return `M${x1},${y1} C${x1},${y1 + d} ${x2},${y2 - d} ${x2},${y2}`;
  }
  if (b.left >= a.right - 1 || b.right <= a.left + 1) {
    const right = b.left >= a.right - 1;
    const [x1, y1, x2, y2] = [right ? a.right : a.left, cy(a), right ? b.left : b.right, cy(b)];
    const d = (x2 - x1) / 2;
    return `M${x1},${y1} C${x1 + d},${y1} ${x2 - d},${y2} ${x2},${y2}`;
  }
  const out = Math.max(a.right, b.right) + 28;
  return `M${a.right},${cy(a)} C${out},${cy(a)} ${out},${cy(b)} ${b.right},${cy(b)}`;
}

function drawEdges() {
  const svg = root.querySelector("svg.arch-edges");
  if (!svg || !graph) return;
  const base = root.getBoundingClientRect();
  svg.setAttribute("width", String(root.scrollWidth));
  svg.setAttribute("height", String(root.scrollHeight));
  svg.replaceChildren();
  markers(svg);
  const rel = (e) => {
    const r = e.getBoundingClientRect();
    return { left: r.left - base.left, right: r.right - base.left, top: r.top - base.top, bottom: r.bottom - base.top };
  };
  for (const edge of graph.edges) {
    const a = boxes.get(edge.source);
    const b = boxes.get(edge.target);
    if (!a || !b || a.contains(b) || b.contains(a)) continue;
    const p = document.createElementNS(SVG_NS, "path");
    p.setAttribute("d", edgePath(rel(a), rel(b)));
    p.setAttribute("class", `edge edge-${edge.kind}`);
    p.setAttribute("marker-end", `url(#arrow-${edge.kind})`);
    p.dataset.source = edge.source;
    p.dataset.target = edge.target;
    svg.append(p);
  }
  markSelected();
}

// ---------------------------------------------------------------------------------------------
// Details of the chosen block

function defList(entries) {
  const dl = el("dl", "arch-dl");
  for (const [k, v] of entries) dl.append(el("dt", "", k), el("dd", "", v));
  return dl;
}

function select(id, keep = true) {
  const n = byId.get(id);
  if (!n) return;
  if (keep) {
    state.node = id;
    writeState(state);
  }
  const box = $("arch-details");
  box.replaceChildren();
  box.append(el("h2", "", n.label));
  box.append(el("p", "arch-kind", KINDS[n.kind] || n.kind));
  const rows = [];
  if (n.name) rows.push([t("module"), n.name]);
  if (n.params || n.name) rows.push([t("parameters"), n.params.toLocaleString("en")]);
  if (n.tied) rows.push([t("shared with"), t("{block}: the same tensor, counted once", { block: byId.get(n.tied)?.label || n.tied })]);
  for (const [k, s] of Object.entries(n.shapes)) rows.push([k, shapeText(s)]);
  for (const [k, v] of Object.entries(n.facts)) rows.push([k, String(v)]);
  const from = graph.edges.filter((e) => e.target === id).map((e) => byId.get(e.source)?.label || e.source);
  const to = graph.edges.filter((e) => e.source === id).map((e) => byId.get(e.target)?.label || e.target);
  if (from.length) rows.push([t("reads from"), [...new Set(from)].join(", ")]);
  if (to.length) rows.push([t("feeds"), [...new Set(to)].join(", ")]);
  box.append(defList(rows));
  if (n.hooks.length) {
    box.append(el("h3", "", t("Captured here ({n})", { n: n.hooks.length })));
    const ul = el("ul", "arch-hook-list");
    for (const h of n.hooks) {
      const li = el("li");
      li.append(el("code", "", h));
      ul.append(li);
    }
    box.append(ul);
  }
  if (n.link) {
    const a = el("a", "arch-open", t("Open its page →"));
    a.href = linkUrl(n.link);
    box.append(a);
  }
  markSelected();
}

/** The chosen box and its edges stand out. */
function markSelected() {
  for (const b of root.querySelectorAll(".arch-node.selected")) b.classList.remove("selected");
  const b = boxes.get(state.node);
  if (b) b.classList.add("selected");
  for (const p of root.querySelectorAll("path.edge")) {
    p.classList.toggle("on", p.dataset.source === state.node || p.dataset.target === state.node);
  }
}

// ---------------------------------------------------------------------------------------------
// The page

function legend() {
  const ul = $("legend");
  ul.replaceChildren();
  const kinds = new Set(graph.nodes.map((n) => n.kind));
  for (const [kind, what] of Object.entries(KINDS)) {
    if (!kinds.has(kind) || (kind === "self_attention" && kinds.has("attention"))) continue;
    const li = el("li");
    li.append(el("span", `swatch kind-${kind}`), document.createTextNode(what));
    ul.append(li);
  }
  const kindsOfEdges = new Set(graph.edges.map((e) => e.kind));
  for (const [kind, what] of Object.entries(EDGES)) {
    if (!kindsOfEdges.has(kind)) continue;
    const li = el("li");
    li.append(el("span", `line edge-${kind}`), document.createTextNode(what));
    ul.append(li);
  }
}

function draw(g) {
  graph = g;
  byId = new Map(g.nodes.map((n) => [n.id, n]));
  boxes.clear();
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("class", "arch-edges");
  svg.setAttribute("aria-hidden", "true");
  root.replaceChildren(rowsEl(g.rows), svg);
  const facts = Object.entries(g.config).map(([k, v]) => `${k} ${v}`).join(" · ");
  $("summary").textContent = t("{model}: {params} parameters ({short}) · {facts} · {hooks} captured tensors", {
    model: g.model, params: g.params.toLocaleString("en"), short: human(g.params), facts, hooks: g.hooks.length,
  });
  legend();
  requestAnimationFrame(drawEdges);
  if (byId.has(state.node)) select(state.node);
  else state.node = "";
  writeState(state);
}

async function initModel() {
  const sel = $("model");
  let models = [];
  try {
    models = (await api("/api/models"))[family] || [];
  } catch (e) {
    models = [];
  }
  sel.replaceChildren(...models.map((m) => {
    const o = el("option", "", m.name);
    o.value = m.name;
    return o;
  }));
  if (state.model && models.some((m) => m.name === state.model)) sel.value = state.model;
  else state.model = models.length ? models[0].name : "";
  sel.closest(".field").hidden = models.length < 2;
  sel.addEventListener("change", () => {
    state.model = sel.value;
    state.node = "";
    load();
  });
}

function load() {
  // The map's words come from the server, in this page's language.
  const query = new URLSearchParams({ lang: LANG });
  if (state.model) query.set("model", state.model);
  return guarded(async () => draw(await api(`/api/${family}/architecture?${query}`)), t("Reading the model…"));
}

/** The details panel sticks just below the top bar, whose height changes with the width and the theme. */
function placeSide() {
  const bar = document.querySelector(".topbar");
  const sticky = bar && getComputedStyle(bar).position === "sticky";
  document.documentElement.style.setProperty("--arch-top", `${(sticky ? bar.offsetHeight : 0) + 12}px`);
}

/**
 * Draw the map of `fam` ("text", "vision" or "diffusion") into #arch.
 * @param {string} fam
 * @param {{model: string, node: string}} pageState  the page's state, read from its URL
 */
export function initArchitecture(fam, pageState) {
  family = fam;
  state = pageState;
  new ResizeObserver(() => requestAnimationFrame(() => {
    placeSide();
    drawEdges();
  })).observe(root);
  return initModel().then(load);
}
