// The operator console (docs/console.md): the REST API of the replica that served this page, read live.
//
// One status stream (GET /api/v1/stream, Server-Sent Events read with fetch) drives every view; the
// topology, the utilization history, the timeline and the pins are read once and again on a new table.
// Every string from the server is set as text (dom.js), never parsed as HTML. The views are modules:
// overview.js, traffic.js, timeline.js, actions.js; state.js holds what they share.

import { checkWatch, fillActionChoices, setupActions } from "./actions.js";
import * as api from "./api.js";
import { $, clear, fmtAge, fmtTime, h } from "./dom.js";
import { renderOverview } from "./overview.js";
import { announce, state, visible } from "./state.js";
import { loadTimeline, renderTimeline } from "./timeline.js";
import { addSample, loadPins, loadUtilization, renderChart, renderTraffic } from "./traffic.js";

const VIEWS = ["overview", "traffic", "timeline", "actions"];
const STALE_AFTER_MS = 20000; // the server pings every 15 s: 20 s of silence means the stream is stuck

// ------------------------------------------------------------------ start, sign-in, sign-out

document.addEventListener("DOMContentLoaded", init);

function init() {
  window.addEventListener("hashchange", showView);
  $("signin-form").addEventListener("submit", signIn);
  $("signout").addEventListener("click", signOut);
  for (const id of ["filter-kind", "filter-subject", "filter-text"]) $(id).addEventListener("input", renderTimeline);
  $("timeline-filter").addEventListener("submit", (e) => e.preventDefault());
  $("timeline-refresh").addEventListener("click", () => loadTimeline(true));
  $("chart-window").addEventListener("input", renderChart);
  setupActions();
  api.onUnauthorized(needSignIn);
  setInterval(tick, 1000);
  showView();
  start();
}

async function start() {
  try {
    const [topology, status] = await Promise.all([api.get("/topology"), api.get("/status")]);
    state.topology = topology.body;
    $("signin").hidden = true;
    $("signout").hidden = !(state.topology.auth && api.token());
    showView();
    fillActionChoices();
    receiveStatus(status.body);
    state.running = true;
    streamLoop();
    loadUtilization();
    loadTimeline(true);
    loadPins();
  } catch (e) {
    if (e.status === 401) return; // the sign-in form is showing
    showBanner(`The console cannot start: ${e.message}. Retrying…`);
    setTimeout(start, 3000);
  }
}

function needSignIn(message) {
  stopStream();
  state.running = false;
  $("signin").hidden = false;
  $("signout").hidden = true;
  for (const v of VIEWS) $(`view-${v}`).hidden = true;
  hideBanner();
  setConn("signed-out", "Signed out");
  const had = api.token();
  if (had) $("signin-error").textContent = `The token was refused: ${message}`; // (several calls may say 401)
  api.setToken("");
  $("signin-token").focus();
}

async function signIn(ev) {
  ev.preventDefault();
  const value = $("signin-token").value.trim();
  if (!value) {
    $("signin-error").textContent = "Enter a token.";
    return;
  }
  api.setToken(value);
  $("signin-token").value = "";
  $("signin-error").textContent = "";
  await start();
  if (state.running) announce("Signed in.");
}

function signOut() {
  api.setToken("");
  state.status = null;
  state.topology = null;
  needSignIn("");
  $("signin-error").textContent = "Signed out.";
}

// ------------------------------------------------------------------ views

function showView() {
  const wanted = (location.hash || "#overview").slice(1);
  const view = VIEWS.includes(wanted) ? wanted : "overview";
  const signingIn = !$("signin").hidden;
  for (const v of VIEWS) $(`view-${v}`).hidden = signingIn || v !== view;
  for (const a of document.querySelectorAll("nav.views a")) {
    if (a.dataset.view === view) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (view === "traffic") renderChart();
  if (view === "timeline") loadTimeline(false);
}

// ------------------------------------------------------------------ the live stream

function stopStream() {
  if (state.stream) state.stream.abort.abort();
  state.stream = null;
}

let streamGeneration = 0;
async function streamLoop() {
  const generation = ++streamGeneration; // a sign-in after a sign-out starts a new loop: the old one ends
  const mine = () => state.running && generation === streamGeneration;
  let backoff = 500;
  while (mine()) {
    const abort = new AbortController();
    const stream = { abort, alive: performance.now() };
    state.stream = stream;
    let gotEvent = false;
    try {
      await api.readStream(abort.signal, (name, data) => {
        let parsed;
        try {
          parsed = JSON.parse(data);
        } catch {
          return;
        }
        if (name === "error") {
          // the server ends the stream: a token removed from the tokens file, say
          const err = new api.ApiError((parsed.error && parsed.error.status) || 0, parsed);
          if (err.status === 401) api.signalUnauthorized(err.message);
          throw err;
        }
        if (name !== "status") return;
        gotEvent = true;
        backoff = 500;
        setConnected(true);
        receiveStatus(parsed);
      }, () => {
        stream.alive = performance.now();
      });
    } catch (e) {
      if (e.status === 401 || e.status === 403) {
        stream.abort.abort();
        if (e.status === 403) showBanner(`The live stream was refused: ${e.message}`);
        state.running = false;
        return;
      }
    }
    if (state.stream === stream) state.stream = null;
    if (!mine()) return;
    setConnected(false);
    if (!gotEvent) backoff = Math.min(backoff * 2, 10000);
    state.retryAt = performance.now() + backoff;
    await new Promise((r) => setTimeout(r, backoff));
  }
}

function setConnected(on) {
  if (on === state.connected && (on || state.disconnectedSince)) return;
  const was = state.connected;
  state.connected = on;
  if (on) {
    const wasDown = state.disconnectedSince !== null;
    state.disconnectedSince = null;
    setConn("live", "Live");
    hideBanner();
    if (wasDown) {
      announce("Live updates reconnected.");
      loadUtilization(); // fill the gap the disconnection left in the chart
    }
  } else {
    state.disconnectedSince = state.disconnectedSince || Date.now();
    setConn("disconnected", "Disconnected");
    if (was) announce("Live updates disconnected; reconnecting.");
  }
  updateBanner();
}

function setConn(kind, text) {
  const c = $("conn");
  c.className = `conn conn-${kind}`;
  c.textContent = text;
}

// Once a second: the table's age, a stuck stream, the banner's countdown.
function tick() {
  if (state.stream && state.connected && performance.now() - state.stream.alive > STALE_AFTER_MS) {
    state.stream.abort.abort(); // the loop reconnects
    setConnected(false);
  }
  renderAge();
  updateBanner();
  if (state.watch) checkWatch();
}

function updateBanner() {
  if (!state.running) return;
  const parts = [];
  if (!state.connected && state.disconnectedSince) {
    const wait = Math.max(0, Math.ceil((state.retryAt - performance.now()) / 1000));
    parts.push(`Live updates are disconnected since ${new Date(state.disconnectedSince).toLocaleTimeString()}: ` +
               `what is shown may be out of date. ${wait > 0 ? `Reconnecting in ${wait} s.` : "Reconnecting…"}`);
  }
  const s = state.status;
  if (s && s.stale) {
    parts.push(`This replica cannot reach etcd${s.etcd_unreachable_since ? ` since ${fmtTime(s.etcd_unreachable_since)}` : ""}: ` +
               "it shows what it last knew.");
  }
  if (s && !s.table) parts.push("No routing table yet: the controller is starting.");
  if (parts.length) showBanner(parts.join(" "));
  else hideBanner();
}

function showBanner(text) {
  const b = $("banner");
  if (b.textContent !== text) b.textContent = text;
  b.hidden = false;
}

function hideBanner() {
  $("banner").hidden = true;
  $("banner").textContent = "";
}

// ------------------------------------------------------------------ a new status

function receiveStatus(status) {
  const before = state.status;
  state.status = status;
  state.statusAt = performance.now();
  describeChanges(before, status);
  const version = status.table ? status.table.version : null;
  const newTable = !before || !before.table || before.table.version !== version;
  renderHeader();
  renderOverview();
  renderTraffic();
  const last = state.samples[state.samples.length - 1];
  if (status.table && (newTable || !last || Date.now() / 1000 - last.time >= 10)) {
    addSample(status); // each table, and every 10 s of the same one (as the server's history samples)
    if (visible("traffic")) renderChart();
  }
  if (newTable && status.table) loadPins();
  loadTimeline(false);
  updateBanner();
  if (state.watch) checkWatch();
}

function describeChanges(before, now) {
  if (!before) return;
  const old = new Map([...(before.regions || []), ...(before.sites || [])].map((r) => [r.region + "/" + (r.site || ""), r]));
  for (const r of [...(now.regions || []), ...(now.sites || [])]) {
    const name = r.site || r.region;
    const was = old.get(r.region + "/" + (r.site || ""));
    if (!was) continue;
    if (was.health !== r.health) announce(`${name} is now ${r.health} (was ${was.health}).`);
    if ((was.evacuation || "") !== (r.evacuation || "")) {
      announce(r.evacuation ? `${name}: ${r.evacuation}.` : `${name} is no longer evacuated.`);
    }
  }
  const f0 = before.table && before.table.fail_open;
  const f1 = now.table && now.table.fail_open;
  if (f0 !== f1 && now.table) announce(f1 ? "The table is fail-open: every target is in the answers." : "The table is no longer fail-open.");
}

function renderHeader() {
  const s = state.status;
  const t = s && s.table;
  $("replica").textContent = s ? s.replica || "–" : "–";
  $("table-version").textContent = t ? `v${t.version}` : "none";
  $("table-leader").textContent = t ? t.leader || s.leader || "–" : (s && s.leader) || "–";
  const flags = $("table-flags");
  clear(flags);
  if (t) {
    if (t.fail_open) flags.append(h("span", { class: "flag flag-bad" }, "fail-open"));
    if (t.converging) flags.append(h("span", { class: "flag flag-warn" }, "converging"));
    if (s.stale) flags.append(h("span", { class: "flag flag-bad" }, "stale"));
    if (!flags.childNodes.length) flags.append(h("span", { class: "flag flag-ok" }, "steady"));
  } else {
    flags.textContent = "–";
  }
  renderAge();
}

function renderAge() {
  const t = state.status && state.status.table;
  $("table-age").textContent = t ? fmtAge(t.age_seconds + (performance.now() - state.statusAt) / 1000) : "–";
}
