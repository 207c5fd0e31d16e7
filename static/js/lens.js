// /text/lens: logit lens as a table, rows = layers, columns = positions, cells shaded by probability.
import {
  $, readState, writeState, latestOnly, runText, onRunForm, initModelSelect, showToken, viridisCss, pct, t, DEFAULT_TEXT,
} from "./common.js";

const state = readState({ text: DEFAULT_TEXT, model: "" });
const seq = latestOnly();

async function run() {
  await runText(state, seq, "/api/text/lens", (r) => {
    writeState(state);
    draw(r);
  }, { k: 3 });
}

function th(text, scope, title) {
  const el = document.createElement("th");
  el.scope = scope;
  el.textContent = text;
  if (title) el.title = title;
  return el;
}

function draw(r) {
  const table = $("lens-table");
  table.replaceChildren();
  const T = r.tokens.length;

  const thead = document.createElement("thead");
  const head = document.createElement("tr");
  head.append(th(t("position →"), "col"));
  r.tokens.forEach((tok, i) => head.append(th(`${i}·${showToken(tok.text)}`, "col", t("position {i}: {token}", { i, token: JSON.stringify(tok.text) }))));
  const actual = document.createElement("tr");
  actual.className = "actual";
  actual.append(th(t("actual next"), "row", t("the token that really follows in the text")));
  r.tokens.forEach((_, i) => actual.append(th(i + 1 < T ? showToken(r.tokens[i + 1].text) : "?", "col")));
  thead.append(head, actual);

  const tbody = document.createElement("tbody");
  r.layers.forEach((name, l) => {
    const tr = document.createElement("tr");
    tr.append(th(name === "embed" ? "embed" : t("layer {layer}", { layer: name }), "row"));
    r.top[l].forEach((cands, i) => {
      const td = document.createElement("td");
      const best = cands[0];
      const { background, color } = viridisCss(best.prob);
      td.style.background = background;
      td.style.color = color;
      const top = document.createElement("span");
      top.className = "t";
      top.textContent = showToken(best.text);
      const p = document.createElement("span");
      p.className = "p";
      p.textContent = pct(best.prob);
      td.append(top, p);
      const after = name === "embed" ? t("after the embedding, position {i}:", { i }) : t("after layer {layer}, position {i}:", { layer: name, i });
      td.title = `${after}\n` + cands.map((c, k) => `${k + 1}. ${JSON.stringify(c.text)}  ${pct(c.prob)}`).join("\n");
      if (i + 1 < T && best.text === r.tokens[i + 1].text) td.classList.add("match");
      tr.append(td);
    });
    tbody.append(tr);
  });
  table.append(thead, tbody);
}

$("text").value = state.text;
onRunForm(run);
$("model").addEventListener("change", run);
initModelSelect(state).then(run);
