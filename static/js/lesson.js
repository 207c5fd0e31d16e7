// The lesson panel (templates/_lesson.html) on every explorer page. When the URL has `lesson` and
// `lstep`, it asks GET /api/lessons/{id} (with the teacher's `example`, if any) for the lesson's steps,
// already resolved to URLs by the server (app/lessons.py), and shows step k: its title and sentences,
// Back and Next. Moving is loading the next step's URL, so the URL stays the whole view: a reload, a
// shared link and a presenter room (which follows URLs) land on the same step. Every text reaches
// the DOM through textContent or value only.

import { $, api, ApiError, LESSON_KEYS, LANG, t, pictureCaption } from "./common.js";
import { withLang } from "./i18n.js";

/**
 * @typedef {{page: string, url: string, title: string, text: string}} LessonStep   (schemas.LessonStepOut)
 * @typedef {{id: string, family: string, title: string, summary: string, example: string,
 *   default_example: string, example_kind: "text"|"image"|"prompt", example_label: string,
 *   steps: LessonStep[]}} Lesson   (schemas.LessonOut)
 */

/** GET the lesson, its words in the page's language, with `example` put into its steps (the default when null). */
function fetchLesson(id, example) {
  const q = new URLSearchParams({ lang: LANG });
  if (example !== null) q.set("example", example);
  return api(`/api/lessons/${encodeURIComponent(id)}?${q}`);
}

/** Load another step's URL, in this page's language. */
const go = (url) => window.location.assign(withLang(url));

function showError(e) {
  const box = $("lesson-error");
  box.textContent = e instanceof ApiError ? e.message : t("Something went wrong in the lesson box: {message}", { message: e.message });
  box.hidden = false;
}

/** The page as it is now, without the lesson's keys: where "Leave the lesson" goes. */
function withoutLesson() {
  const params = new URLSearchParams(window.location.search);
  for (const key of LESSON_KEYS) params.delete(key);
  const q = params.toString();
  return `${window.location.pathname}${q ? `?${q}` : ""}`;
}

/** Fill the picture select from the ViT gallery, keeping `current` (an upload's id) when it is not in it. */
async function fillPictures(sel, current) {
  let items = [];
  try {
    items = (await api("/api/vision/gallery")).items;
  } catch (e) {
    items = [];
  }
  sel.replaceChildren();
  if (!items.some((it) => it.id === current)) items = [{ id: current, caption: current, kind: "upload" }, ...items];
  const kinds = { scene: t("scene"), photo: t("photo"), upload: t("upload") };
  for (const it of items) {
    const o = document.createElement("option");
    o.value = it.id;
    o.textContent = `${pictureCaption(it)} (${kinds[it.kind] || it.kind})`;
    sel.append(o);
  }
  sel.value = current;
}

/** @param {Lesson} lesson  @param {number} k  1-based */
function render(lesson, k) {
  const n = lesson.steps.length;
  const step = lesson.steps[k - 1];
  $("lesson-title").textContent = lesson.title;
  $("lesson-k").textContent = String(k);
  $("lesson-n").textContent = String(n);
  $("lesson-step-title").textContent = step.title;
  $("lesson-text").textContent = step.text;
  $("lesson-prev").disabled = k <= 1;
  $("lesson-next").disabled = k >= n;
  $("lesson-reset").href = step.url;
  document.querySelectorAll("#lesson .lesson-example-label").forEach((s) => { s.textContent = lesson.example_label; });
  const image = lesson.example_kind === "image";
  $("lesson-example-text").hidden = image;
  $("lesson-example-image").hidden = !image;
  if (image) fillPictures($("lesson-example-picture"), lesson.example);
  else $("lesson-example").value = lesson.example;
  $("lesson").hidden = false;
}

async function init() {
  const params = new URLSearchParams(window.location.search);
  const id = params.get("lesson");
  if (!id || !$("lesson")) return;
  const example = params.has("example") ? params.get("example") : null;
  let lesson;
  try {
    lesson = await fetchLesson(id, example);
  } catch (e) {
    $("lesson").hidden = false;
    showError(e);
    return;
  }
  const asked = Number(params.get("lstep"));
  const k = Number.isInteger(asked) && asked >= 1 && asked <= lesson.steps.length ? asked : 1;
  render(lesson, k);

  $("lesson-prev").addEventListener("click", () => go(lesson.steps[k - 2].url));
  $("lesson-next").addEventListener("click", () => go(lesson.steps[k].url));
  $("lesson-leave").addEventListener("click", () => {
    window.history.replaceState(window.history.state, "", withoutLesson());
    $("lesson").hidden = true;
  });
  $("lesson-example-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    $("lesson-error").hidden = true;
    const value = lesson.example_kind === "image" ? $("lesson-example-picture").value : $("lesson-example").value;
    try {
      // The server puts the new example into every step; this step is shown again with it.
      const changed = await fetchLesson(id, value === lesson.default_example ? null : value);
      go(changed.steps[k - 1].url);
    } catch (e) {
      showError(e);
    }
  });
}

init();
