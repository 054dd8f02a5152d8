// Timeline: events and operator actions together, newest first, filterable.

import * as api from "./api.js";
import { $, clear, fmtTime, h } from "./dom.js";
import { state, visible } from "./state.js";

const MAX_TIMELINE = 300;

let timelineLoading = null;
export async function loadTimeline(force) {
  if (!state.running && !force) return;
  // a new table or a new event (health changes without a new table) is worth a new read
  const s = state.status;
  const events = (s && s.events) || [];
  const key = `${s && s.table ? s.table.version : ""}|${events.length ? events[events.length - 1].id : ""}`;
  if (!force && (!visible("timeline") || key === state.timelineVersion)) return;
  if (timelineLoading) return timelineLoading;
  state.timelineVersion = key;
  timelineLoading = (async () => {
    try {
      const [events, history] = await Promise.all([api.get("/events", { limit: 200 }),
                                                  api.get("/history", { limit: 100 })]);
      const items = [];
      for (const e of events.body.events || []) {
        items.push({ id: `e-${e.id}`, time: e.time, kind: e.kind, severity: e.severity, subject: e.subject,
                     message: e.message, source: "event", actor: e.replica });
      }
      for (const r of history.body.records || []) {
        const subject = r.region || [r.service, r.geo].filter(Boolean).join(" ");
        items.push({ id: `a-${r.id}`, time: r.time, kind: `operator: ${r.action}`, severity: "action",
                     subject, message: `${r.actor} ${r.action} ${subject}${r.forced ? " (forced)" : ""}` +
                                       `${r.reason ? `: ${r.reason}` : ""}`,
                     source: "action", actor: r.actor });
      }
      items.sort((a, b) => b.time - a.time);
      state.timeline = items;
      const kinds = $("filter-kind");
      const chosen = kinds.value;
      const known = [...new Set(items.map((i) => i.kind))].sort();
      clear(kinds).append(h("option", { value: "" }, "any"), ...known.map((k) => h("option", { value: k }, k)));
      kinds.value = known.includes(chosen) ? chosen : "";
      renderTimeline();
    } catch (e) {
      $("timeline-count").textContent = `The timeline cannot be read: ${e.message}`;
    } finally {
      timelineLoading = null;
    }
  })();
  return timelineLoading;
}

export function renderTimeline() {
  const kind = $("filter-kind").value;
  const subject = $("filter-subject").value.trim().toLowerCase();
  const text = $("filter-text").value.trim().toLowerCase();
  const shown = state.timeline.filter((i) => (!kind || i.kind === kind)
    && (!subject || (i.subject || "").toLowerCase().includes(subject))
    && (!text || `${i.kind} ${i.subject} ${i.message} ${i.actor}`.toLowerCase().includes(text)));
  const list = clear($("timeline"));
  for (const i of shown.slice(0, MAX_TIMELINE)) {
    list.append(h("li", { class: `item item-${i.source} sev-${i.severity}`, "data-kind": i.kind },
      h("time", { datetime: new Date(i.time * 1000).toISOString() }, fmtTime(i.time)),
      h("span", { class: "kind" }, i.kind),
      h("span", { class: "severity" }, i.severity),
      h("span", { class: "subject" }, i.subject || "–"),
      h("span", { class: "message" }, i.message)));
  }
  $("timeline-count").textContent = `${shown.length} of ${state.timeline.length} entries` +
    (shown.length > MAX_TIMELINE ? ` (the newest ${MAX_TIMELINE} shown)` : "");
}
