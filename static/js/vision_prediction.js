// /vision/prediction: the class probabilities of the picture, as bars.
import { $, baseLayout, plot, labelAxis, probabilityBars, plotlyText, fmt, pct, t } from "./common.js";
import { visionState, initPicker, pictureFigure, drawPicture } from "./vision.js";

const state = visionState();
let trace = null;

function onTrace(vt) {
  trace = vt;
  drawPicture($("image"), pictureFigure(vt), { trace: () => trace });
  const top = vt.top;
  const best = top[0];
  const says = { model: vt.model, label: best.label, p: pct(best.prob), k: top.length, n: vt.n_labels };
  $("prediction-caption").textContent = vt.n_labels > top.length
    ? t("{model} says “{label}” with {p} (the {k} most likely of {n} classes).", says)
    : t("{model} says “{label}” with {p}.", says);
  const labels = top.map((c) => c.label);
  const bars = probabilityBars(top.map((c) => c.prob), top.map((c) => plotlyText(`${c.label}: ${pct(c.prob)} (logit ${fmt(c.logit)})`)));
  plot($("bars"), [bars], baseLayout({
    xaxis: { range: [0, 1.15], title: { text: t("probability") }, zeroline: true, gridcolor: "#e4e7eb" },
    yaxis: labelAxis(labels, { autorange: "reversed" }),
    margin: { l: 120, r: 30, t: 10, b: 50 },
    bargap: 0.15,
  }));
}

initPicker(state, onTrace);
