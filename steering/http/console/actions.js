// Actions: evacuate, restore, pin and unpin, each previewed (a dry run), confirmed by typing its subject,
// applied with a request id chosen at preview time, and followed until the table shows it.

import * as api from "./api.js";
import { $, clear, fmtPct, h } from "./dom.js";
import { announce, state } from "./state.js";

function actionKind() {
  return document.querySelector("input[name=kind]:checked").value;
}

export function setupActions() {
  const form = $("action-form");
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    preview();
  });
  form.addEventListener("input", (e) => {
    if (e.target.name === "kind") showActionFields();
    if (e.target.id === "action-service") fillGeos();
    if (e.target.id === "action-service" || e.target.id === "action-geo") fillWeights();
    resetPreview(); // a changed request needs a new preview
  });
  $("confirm-input").addEventListener("input", () => {
    $("action-apply").disabled = !state.action || $("confirm-input").value !== state.action.word;
  });
  $("confirm-form").addEventListener("submit", (e) => {
    e.preventDefault();
    apply();
  });
  $("action-cancel").addEventListener("click", () => {
    resetPreview();
    $("action-preview").focus();
  });
  showActionFields();
}

function showActionFields() {
  const kind = actionKind();
  for (const el of document.querySelectorAll("#action-form [data-for]")) {
    el.hidden = !el.dataset.for.split(" ").includes(kind);
  }
}

export function fillActionChoices() {
  const topo = state.topology;
  const region = $("action-region");
  const chosen = region.value;
  clear(region).append(...topo.regions.map((r) => h("option", { value: r.name }, r.name)));
  if (chosen) region.value = chosen;
  const service = $("action-service");
  clear(service).append(...topo.services.map((s) => h("option", { value: s.name }, s.name)));
  fillGeos();
  fillWeights();
}

function serviceOf(name) {
  return (state.topology.services || []).find((s) => s.name === name);
}

function fillGeos() {
  const svc = serviceOf($("action-service").value);
  clear($("action-geo")).append(...(svc ? svc.geos : []).map((g) => h("option", { value: g }, g)));
}

function fillWeights() {
  const svc = serviceOf($("action-service").value);
  const box = clear($("action-weight-inputs"));
  const geo = $("action-geo").value;
  const current = (state.status && state.status.geos && svc && state.status.geos[svc.name] || {})[geo] || {};
  for (const t of svc ? svc.targets : []) {
    const id = `weight-${t.replace(/[^A-Za-z0-9_-]/g, "_")}`;
    box.append(h("p", { class: "weight-input" }, h("label", { for: id }, t),
      h("input", { id, type: "number", min: 0, max: 1000000, step: "any", value: current[t] || 0, "data-target": t })));
  }
}

function resetPreview() {
  state.action = null;
  $("action-result").hidden = true;
  $("action-refusal").hidden = true;
  clear($("action-refusal"));
  $("confirm-input").value = "";
  $("action-apply").disabled = true;
}

function newRequestId() {
  const bytes = new Uint8Array(12);
  crypto.getRandomValues(bytes);
  return `console-${[...bytes].map((b) => b.toString(16).padStart(2, "0")).join("")}`;
}

// The request for the form's action: how to send it (dry run or not) and what the word to type is.
function buildAction() {
  const kind = actionKind();
  const reason = $("action-reason").value.trim();
  const force = $("action-force").checked;
  const mode = $("action-mode").value;
  const region = $("action-region").value;
  const service = $("action-service").value;
  const geo = $("action-geo").value;
  const svcPath = `/${encodeURIComponent(service)}/${encodeURIComponent(geo)}`;
  if (kind === "evacuate") {
    return { kind, word: region, subject: region, mode,
             send: (dry, rid) => api.call("POST", "/evacuations",
                                          { body: { region, reason, mode, force, dry_run: dry, request_id: rid } }) };
  }
  if (kind === "restore") {
    return { kind, word: region, subject: region, mode,
             send: (dry, rid) => api.call("DELETE", `/evacuations/${encodeURIComponent(region)}`,
                                          { query: { mode, reason, dry_run: dry, request_id: rid } }) };
  }
  if (kind === "pin") {
    const weights = {};
    for (const input of document.querySelectorAll("#action-weight-inputs input")) {
      const v = Number(input.value);
      if (input.value !== "" && Number.isFinite(v) && v > 0) weights[input.dataset.target] = v;
    }
    return { kind, word: geo, subject: `${service} ${geo}`, service, geo, weights,
             send: (dry, rid) => api.call("PUT", `/pins${svcPath}`,
                                          { body: { weights, reason, force, dry_run: dry, request_id: rid } }) };
  }
  return { kind, word: geo, subject: `${service} ${geo}`, service, geo,
           send: (dry, rid) => api.call("DELETE", `/pins${svcPath}`, { query: { reason, dry_run: dry, request_id: rid } }) };
}

async function preview() {
  resetPreview();
  const action = buildAction();
  if (!$("action-reason").value.trim()) {
    showRefusal("The reason is required: it is kept in the audit.", []);
    $("action-reason").focus();
    return;
  }
  if (action.kind === "pin" && !Object.keys(action.weights).length) {
    showRefusal("Give at least one target a weight above 0.", []);
    return;
  }
  $("action-progress").textContent = "Asking for a preview…";
  try {
    const r = await action.send(true, undefined);
    $("action-progress").textContent = "";
    action.requestId = newRequestId(); // the apply's id: a retried apply is applied once
    state.action = action;
    showPreview(action, r.body.preview, (r.body.warnings || []));
    $("confirm-word").textContent = action.word;
    $("confirm-form").hidden = false;
    $("action-result").hidden = false;
    $("confirm-input").focus();
  } catch (e) {
    $("action-progress").textContent = "";
    refused(e);
  }
}

function weightsText(w) {
  const parts = Object.entries(w || {}).filter(([, v]) => v).map(([t, v]) => `${t} ${v}`);
  return parts.join(" · ") || "none";
}

function showPreview(action, p, warnings) {
  const summary = {
    evacuate: `Evacuate ${action.subject} (${action.mode === "now" ? "at once" : "ramp at the policy's pace"})`,
    restore: `Restore ${action.subject} (${action.mode === "now" ? "at once" : "ramp at the policy's pace"})`,
    pin: `Pin ${action.subject} to ${weightsText(action.weights)}`,
    unpin: `Unpin ${action.subject}`,
  }[action.kind];
  const s = $("action-summary");
  clear(s).append(summary, ".");
  for (const w of warnings) s.append(h("span", { class: "warning" }, ` Warning: ${w}`));
  if (p && p.fail_open_after) s.append(h("strong", { class: "warning" }, " After it the table is fail-open: every target answers."));
  renderPreviewTables(p);
}

function renderPreviewTables(p) {
  const changes = clear($("preview-changes").tBodies[0]);
  for (const c of (p && p.changes) || []) {
    changes.append(h("tr", { "data-geo": c.geo }, h("td", {}, c.service), h("th", { scope: "row" }, c.geo),
                     h("td", {}, weightsText(c.before)), h("td", {}, weightsText(c.after))));
  }
  if (!changes.childNodes.length) changes.append(h("tr", {}, h("td", { colspan: 4 }, "No weights change.")));
  const regions = clear($("preview-regions").tBodies[0]);
  for (const r of (p && p.regions) || []) {
    const over = r.utilization_after > r.hard_limit;
    regions.append(h("tr", { "data-region": r.region, class: over ? "over" : "" },
      h("th", { scope: "row" }, r.region), h("td", { class: "num" }, fmtPct(r.utilization_before)),
      h("td", { class: "num" }, fmtPct(r.utilization_after)), h("td", { class: "num" }, fmtPct(r.hard_limit)),
      h("td", {}, over ? "over the hard limit" : "within the hard limit")));
  }
}

function showRefusal(message, rules, extra) {
  const box = clear($("action-refusal"));
  if (rules.length) box.append(h("p", {}, h("strong", {}, "Refused by the safety rules:")));
  else box.append(h("p", {}, h("strong", {}, "Refused: "), message));
  if (rules.length) {
    box.append(h("ul", {}, ...rules.map((r) => h("li", { "data-rule": r.rule },
      h("code", { class: "rule" }, r.rule), ": ", r.message))));
  }
  if (extra) box.append(h("p", {}, extra));
  box.hidden = false;
}

function refused(e) {
  if (e.status === 401) return; // the sign-in form is showing
  if (e.status === 403) {
    showRefusal(e.message, [], "Your token's role may not act; sign in with an operator token.");
    return;
  }
  const extra = e.code === "refused" && $("action-force").checked === false && actionKind() !== "restore"
    ? "Some rules can be passed with Force; read the preview below first." : "";
  showRefusal(e.field && !e.message.includes(e.field) ? `${e.field}: ${e.message}` : e.message, e.rules, extra);
  if (e.preview) {
    // what the refused action would have done
    renderPreviewTables(e.preview);
    $("action-summary").textContent = "What it would have done (nothing was applied):";
    $("confirm-form").hidden = true;
    $("action-result").hidden = false;
    $("action-apply").disabled = true;
  }
}

async function apply() {
  const action = state.action;
  if (!action || $("confirm-input").value !== action.word) return;
  $("action-apply").disabled = true;
  const since = state.status && state.status.table ? state.status.table.version : 0;
  $("action-progress").textContent = "Applying…";
  try {
    const r = await action.send(false, action.requestId);
    const done = r.body || {};
    $("action-result").hidden = true;
    state.action = null;
    $("confirm-input").value = "";
    const what = `${action.kind} ${action.subject}`;
    if (!done.applied) {
      $("action-progress").textContent = `${what}: nothing to do (${(done.warnings || []).join("; ") || "already so"}).`;
      return;
    }
    const p = done.preview;
    const change = action.service && p ? (p.changes || []).find((c) => c.service === action.service && c.geo === action.geo) : null;
    state.watch = { action, since, started: performance.now(), audit: done.audit_id, change };
    $("action-progress").textContent = `${what} recorded (audit ${done.audit_id || "–"}); waiting for the table to show it…`;
    checkWatch();
  } catch (e) {
    $("action-progress").textContent = "";
    refused(e);
  }
}

function sameWeights(a, b) {
  const nz = (w) => Object.entries(w || {}).filter(([, v]) => v).sort(([x], [y]) => (x < y ? -1 : 1));
  return JSON.stringify(nz(a)) === JSON.stringify(nz(b));
}

// Is the applied action in the current table yet? Progress text until it is.
export function checkWatch() {
  const w = state.watch;
  const s = state.status;
  if (!w || !s || !s.table) return;
  const { action } = w;
  const version = s.table.version;
  let done = false;
  let now = "";
  if (action.kind === "evacuate" || action.kind === "restore") {
    const r = (s.regions || []).find((x) => x.region === action.subject);
    if (!r) return;
    const label = r.evacuation || "";
    now = `table v${version}: ${r.region} ${r.serving ? "serving" : "not serving"}, evacuation ${label || "none"}`;
    if (action.kind === "evacuate") {
      done = label !== "" && label !== "blocked" && !/left\)$/.test(label);
      if (label === "blocked") now += " (the planner blocked it; see the notes in Overview)";
    } else {
      done = label === "";
    }
  } else {
    const current = (s.geos[action.service] || {})[action.geo] || {};
    now = `table v${version}: ${action.geo} → ${weightsText(current)}`;
    done = version > w.since && (w.change ? sameWeights(current, w.change.after) : true);
  }
  const what = `${action.kind} ${action.subject}`;
  if (done) {
    $("action-progress").textContent = `Done: ${what} is in the table (${now}).`;
    announce(`Done: ${what} is in table v${version}.`);
    state.watch = null;
    return;
  }
  const waited = (performance.now() - w.started) / 1000;
  $("action-progress").textContent = `${what}: waiting for the table to show it (${Math.round(waited)} s); ${now}.`;
}
