// Presenter mode (classroom rooms), on every page. The presenter's page sends its view (path and
// query string: every page keeps its whole state in its query) to the room whenever it changes; a
// follower's page receives the room's view over Server-Sent Events and loads that URL. Loading the
// URL, rather than applying the state in place, works the same on every page without touching
// their code, and the traces it asks for are the presenter's, already in the server's cache.
//
// The room (code, role, the presenter's secret, whether a follower follows) is kept in
// sessionStorage: one tab's, kept across its page loads. Codes and links reach the DOM through
// textContent and value only.
//
// This script is included before the page's own script, so it runs first (module scripts run in
// document order): `loaded` is the view the page was opened with, before the page rewrites its URL.
// The language (`lang`) is each reader's own: a room shares the view, and every follower keeps theirs.

import { LANG_KEY, t } from "./i18n.js";

const KEY = "glassbox.room";
const SEND_DELAY_MS = 100; // a burst of URL changes (a page filling in its defaults) becomes one send
const SEND_MAX_WAIT_MS = 1000; // ... while a long burst (an animation playing) still sends once a second
const HEARTBEAT_MS = 3000; // the presenter's page keeps its room alive and reads the follower count
const FULL_RETRY_MS = 5000;

const $ = (id) => document.getElementById(id);

/**
 * @typedef {{path: string, query: string}} View
 * @typedef {{code: string, version: number, path: string, query: string, followers: number,
 *   max_followers: number, idle_s: number, join_url: string}} RoomOut   (app/routes/rooms.py RoomOut)
 * @typedef {{role: "presenter", code: string, secret: string} |
 *   {role: "follower", code: string, following: boolean, version: number}} Stored
 */

/** @returns {View} the view in a location, without our own `room` parameter nor the reader's language */
function viewOf(loc) {
  const params = new URLSearchParams(loc.search);
  params.delete("room");
  params.delete(LANG_KEY);
  return { path: loc.pathname, query: params.toString() };
}

/** Same page and same parameters, whatever their order or encoding. */
function sameView(a, b) {
  if (!a || !b || a.path !== b.path) return false;
  const norm = (q) => JSON.stringify([...new URLSearchParams(q)].sort((x, y) => (x[0] === y[0] ? cmp(x[1], y[1]) : cmp(x[0], y[0]))));
  return norm(a.query) === norm(b.query);
}

const cmp = (x, y) => (x < y ? -1 : x > y ? 1 : 0);

function loadStored() {
  try {
    const r = JSON.parse(sessionStorage.getItem(KEY) || "null");
    return r && typeof r.code === "string" && (r.role === "presenter" || r.role === "follower") ? r : null;
  } catch (e) {
    return null;
  }
}

function store(r) {
  try {
    if (r) sessionStorage.setItem(KEY, JSON.stringify(r));
    else sessionStorage.removeItem(KEY);
  } catch (e) {
    // storage refused (a privacy mode): the room lasts as long as this page
  }
}

/** fetch JSON with an optional presenter secret; never throws (status 0: unreachable). */
async function call(method, path, body, secret) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (secret) headers["X-Room-Secret"] = secret;
  try {
    const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    let payload = null;
    try {
      payload = res.status === 204 ? null : await res.json();
    } catch (e) {
      payload = null;
    }
    return { status: res.status, ok: res.ok, payload };
  } catch (e) {
    return { status: 0, ok: false, payload: null };
  }
}

const roomPath = (code) => `/api/rooms/${encodeURIComponent(code)}`;

// ---------------------------------------------------------------------------------------------
// The bar under the header: built from elements, every text through textContent.

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k === "onclick") e.addEventListener("click", v);
    else e.setAttribute(k, v);
  }
  e.append(...children);
  return e;
}

function showBar(...children) {
  const bar = $("room-bar");
  if (!bar) return;
  bar.replaceChildren(...children);
  bar.hidden = children.length === 0;
  const present = $("present");
  if (present) present.hidden = !!loadStored();
}

function showNotice(message) {
  showBar(el("span", { class: "room-notice", text: message }), el("button", { type: "button", class: "room-button", text: t("OK"), onclick: () => showBar() }));
}

// ---------------------------------------------------------------------------------------------
// Presenter

let presenting = null; // {code, secret, timer, beat}

async function startRoom() {
  const button = $("present");
  button.disabled = true;
  const r = await call("POST", "/api/rooms", viewOf(window.location));
  button.disabled = false;
  if (!r.ok) {
    showNotice((r.payload && r.payload.detail) || t("Could not start a room: the glassbox server did not answer."));
    return;
  }
  store({ role: "presenter", code: r.payload.code, secret: r.payload.secret });
  present(r.payload.code, r.payload.secret, r.payload.followers);
}

function present(code, secret, followers = 0) {
  const link = `${window.location.origin}/join/${code}`;
  const count = el("span", { class: "room-count", id: "room-count", "aria-live": "polite" });
  const linkBox = el("input", { class: "room-link", id: "room-link", type: "text", readonly: "", "aria-label": t("Link for students") });
  linkBox.value = link;
  linkBox.addEventListener("focus", () => linkBox.select());
  const copy = el("button", { type: "button", class: "room-button", text: t("Copy link") });
  copy.addEventListener("click", async () => {
    linkBox.select();
    try {
      await navigator.clipboard.writeText(link);
      copy.textContent = t("Copied");
    } catch (e) {
      copy.textContent = t("Press Ctrl+C"); // the clipboard API needs https or localhost; the text is selected
    }
    setTimeout(() => { copy.textContent = t("Copy link"); }, 2000);
  });
  showBar(
    el("span", { class: "room-role", text: t("Presenting") }),
    el("span", { text: t("room") }),
    el("strong", { class: "room-code", id: "room-code", text: code }),
    el("span", { class: "room-sep", text: "·" }),
    linkBox,
    copy,
    count,
    el("button", { type: "button", class: "room-button", id: "room-stop", text: t("Stop presenting"), onclick: stopRoom }),
  );
  presenting = { code, secret, timer: null, firstPending: 0, sending: false, again: false, beat: null };
  setCount(followers);
  watchUrl();
  if (visible()) sendView();
  presenting.beat = setInterval(keepAlive, HEARTBEAT_MS);
}

// The tab the presenter looks at drives the room. A second tab of theirs (sessionStorage is copied
// into a tab opened from a link) keeps the room alive, and only takes over once it is looked at;
// otherwise two tabs would pull the followers back and forth.
const visible = () => document.visibilityState === "visible";

/** The room stays while this page is open; the answer carries the follower count. */
async function keepAlive() {
  const p = presenting;
  if (!p) return;
  const r = await call("POST", `${roomPath(p.code)}/alive`, undefined, p.secret);
  if (presenting !== p) return;
  if (r.ok) setCount(r.payload.followers);
  else if (r.status === 404 || r.status === 403) endPresenting(t("Room {code} has ended (it was idle too long, or the server restarted).", p));
}

function setCount(n) {
  const c = $("room-count");
  if (c) c.textContent = t("{n} following", { n });
}

let watching = false;

/** Every page writes its state with history.replaceState: send the new view shortly after. */
function watchUrl() {
  if (watching) return; // once per page, however often presenting starts and stops on it
  watching = true;
  const schedule = () => {
    if (!presenting || !visible()) return; // a hidden tab's own updates: sent when it is looked at
    const now = Date.now();
    if (!presenting.timer) presenting.firstPending = now;
    clearTimeout(presenting.timer);
    const wait = Math.max(0, Math.min(SEND_DELAY_MS, presenting.firstPending + SEND_MAX_WAIT_MS - now));
    presenting.timer = setTimeout(() => {
      if (presenting) presenting.timer = null;
      sendView();
    }, wait);
  };
  for (const name of ["replaceState", "pushState"]) {
    const original = window.history[name].bind(window.history);
    window.history[name] = (...args) => {
      const out = original(...args);
      schedule();
      return out;
    };
  }
  window.addEventListener("popstate", schedule);
  document.addEventListener("visibilitychange", () => {
    if (presenting && visible()) sendView();
  });
}

/** PUT the current view; one request at a time, so an older view never lands after a newer one. */
async function sendView() {
  const p = presenting;
  if (!p) return;
  if (p.sending) {
    p.again = true;
    return;
  }
  p.sending = true;
  try {
    const r = await call("PUT", `${roomPath(p.code)}/state`, viewOf(window.location), p.secret);
    if (presenting !== p) return;
    if (r.ok) setCount(r.payload.followers);
    else if (r.status === 404 || r.status === 403) endPresenting(t("Room {code} has ended (it was idle too long, or the server restarted).", p));
  } finally {
    p.sending = false;
    if (p.again && presenting === p) {
      p.again = false;
      sendView();
    }
  }
}

function endPresenting(message) {
  if (presenting) {
    clearTimeout(presenting.timer);
    clearInterval(presenting.beat);
  }
  presenting = null;
  store(null);
  if (message) showNotice(message);
  else showBar();
}

async function stopRoom() {
  const p = presenting;
  if (!p) return;
  endPresenting();
  await call("DELETE", roomPath(p.code), undefined, p.secret);
}

// ---------------------------------------------------------------------------------------------
// Follower

let following = null; // {source, latest: RoomOut | null, first: boolean, leaving: boolean}

function follow(room) {
  following = { source: null, latest: null, first: true, leaving: false };
  renderFollower(room);
  connect(room.code);
}

function connect(code) {
  const source = new EventSource(`${roomPath(code)}/events`);
  following.source = source;
  source.addEventListener("state", (ev) => {
    if (following.leaving) return; // already on its way to the room's view
    const s = JSON.parse(ev.data);
    following.latest = s;
    const first = following.first;
    following.first = false;
    const room = loadStored();
    if (room && room.role === "follower" && room.following) apply(room, s, first ? loaded.view : viewOf(window.location), first);
  });
  source.addEventListener("closed", () => {
    source.close();
    leaveRoom(t("Room {code} has ended.", { code }));
  });
  source.addEventListener("error", async () => {
    if (source.readyState !== EventSource.CLOSED || !following || following.source !== source) return;
    // Refused outright (not a dropped connection, which EventSource retries by itself): ask why.
    const r = await call("GET", roomPath(code));
    if (r.status === 404) leaveRoom(t("Room {code} has ended.", { code }));
    else {
      setFollowerNote(r.ok ? t("the room is full; trying again…") : t("the server did not answer; trying again…"));
      setTimeout(() => { if (following && following.source === source) connect(code); }, FULL_RETRY_MS);
    }
  });
}

/**
 * Show the room's view `s` unless this page already shows it. `reference` is the view the page
 * shows (on the first event: the URL it was opened with, before it added its own defaults).
 * After the first event, only a new version moves the page, so a page that rewrites its own URL
 * is never sent round in circles.
 */
function apply(room, s, reference, force) {
  if (sameView(s, reference)) {
    store({ ...room, version: s.version });
    return;
  }
  if (!force && s.version === room.version) return;
  const url = new URL(s.path, window.location.origin);
  url.search = s.query;
  const lang = new URLSearchParams(window.location.search).get(LANG_KEY);
  if (lang) url.searchParams.set(LANG_KEY, lang); // the follower's language, not the presenter's
  if (url.origin !== window.location.origin) return; // the server allows its own pages only; be sure
  store({ ...room, version: s.version });
  following.leaving = true;
  window.location.replace(url.pathname + url.search);
}

function renderFollower(room) {
  const toggle = el("button", { type: "button", class: "room-button", id: "room-toggle" });
  const exit = el("button", { type: "button", class: "room-button", id: "room-exit", text: t("Exit room"), onclick: () => leaveRoom() });
  const role = el("span", { class: "room-role", id: "room-role" });
  const note = el("span", { class: "room-note", id: "room-note" });
  if (room.following) {
    role.textContent = t("Following");
    toggle.textContent = t("Leave");
    toggle.title = t("Explore on your own; the presenter's changes will not move this page");
    toggle.addEventListener("click", () => {
      store({ ...room, following: false });
      renderFollower(loadStored());
    });
  } else {
    role.textContent = t("Exploring on your own");
    toggle.textContent = t("Rejoin");
    toggle.title = t("Follow the presenter again");
    toggle.classList.add("primary");
    toggle.addEventListener("click", () => {
      const now = { ...room, following: true };
      store(now);
      renderFollower(now);
      if (following && following.latest) apply(now, following.latest, viewOf(window.location), true);
    });
  }
  showBar(role, el("span", { text: t("room") }), el("strong", { class: "room-code", id: "room-code", text: room.code }), toggle, exit, note);
}

function setFollowerNote(text) {
  const n = $("room-note");
  if (n) n.textContent = text;
}

function leaveRoom(message) {
  if (following && following.source) following.source.close();
  following = null;
  store(null);
  if (message) showNotice(message);
  else showBar();
}

// ---------------------------------------------------------------------------------------------
// Start

/** A join link arrives as ?room=CODE: remember it for this tab and take it out of the address. */
function takeRoomParam() {
  const params = new URLSearchParams(window.location.search);
  const code = (params.get("room") || "").trim().toUpperCase();
  if (params.has("room")) {
    params.delete("room");
    const q = params.toString();
    window.history.replaceState(window.history.state, "", `${window.location.pathname}${q ? `?${q}` : ""}${window.location.hash}`);
  }
  return { code, view: viewOf(window.location) };
}

const loaded = takeRoomParam();

function start() {
  if (loaded.code) store({ role: "follower", code: loaded.code, following: true, version: 0 });
  const room = loadStored();
  const button = $("present");
  if (button) button.addEventListener("click", startRoom);
  if (!room) return showBar();
  if (room.role === "presenter") present(room.code, room.secret);
  else follow(room);
}

window.addEventListener("pagehide", () => {
  if (following && following.source) following.source.close(); // the next page opens its own stream
});
window.addEventListener("pageshow", (ev) => {
  // Back from the back-forward cache: the stream closed at pagehide, open it again.
  const room = loadStored();
  if (!ev.persisted || !following || !room || room.role !== "follower") return;
  following.first = false;
  connect(room.code);
});

start();
