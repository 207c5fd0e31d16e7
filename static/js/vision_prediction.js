// /vision/prediction: the class probabilities of the picture, as bars.
import { $, baseLayout, plot, labelAxis, probabilityBars, plotlyText, fmt, pct } from "./common.js";
import { visionState, initPicker, pictureFigure, drawPicture } from "./vision.js";

const state = visionState();
let trace = null;

function onTrace(t) {
  trace = t;
  drawPicture($("image"), pictureFigure(t), { trace: () => trace });
  const top = t.top;
  const best = top[0];
  $("prediction-caption").textContent =
    `${t.model} says “${best.label}” with ${pct(best.prob)}` + (t.n_labels > top.length ? ` (the ${top.length} most likely of ${t.n_labels} classes).` : ".");
  const labels = top.map((c) => c.label);
  const bars = probabilityBars(top.map((c) => c.prob), top.map((c) => plotlyText(`${c.label}: ${pct(c.prob)} (logit ${fmt(c.logit)})`)));
  plot($("bars"), [bars], baseLayout({
    xaxis: { range: [0, 1.15], title: { text: "probability" }, zeroline: true, gridcolor: "#e4e7eb" },
    yaxis: labelAxis(labels, { autorange: "reversed" }),
    margin: { l: 120, r: 30, t: 10, b: 50 },
    bargap: 0.15,
  }));
}

initPicker(state, onTrace);
