// Overview: every region and cache site, its health and why, load against capacity, serving and evacuation.

import { $, clear, fmtAge, fmtNumber, fmtPct, fmtTime, h } from "./dom.js";
import { policy, state } from "./state.js";
import { loadBar } from "./svg.js";

const MAX_SITES_SHOWN = 500;

function why(r) {
  const parts = [];
  if (r.detail) parts.push(r.detail);
  if (r.verdict && r.verdict !== r.detail) parts.push(r.verdict);
  for (const c of r.checks || []) if (c.detail) parts.push(`${c.name}: ${c.detail}`);
  for (const x of r.reporters || []) {
    if (x.counted && x.status !== "healthy") parts.push(`${x.reporter} says ${x.status}${x.detail ? ` (${x.detail})` : ""}`);
  }
  if (r.unreachable_geos && r.unreachable_geos.length) parts.push(`unreachable from ${r.unreachable_geos.join(", ")}`);
  if (r.last_report) parts.push(`last report ${fmtAge(Date.now() / 1000 - r.last_report)} ago${r.heard_by ? ` (via ${r.heard_by})` : ""}`);
  return parts.join("; ") || "–";
}

function healthCell(health) {
  const mark = { healthy: "✓", unhealthy: "✗", silent: "?", unknown: "?" }[health] || "?";
  return h("td", { class: `health health-${health}` },
           h("span", { class: "health-mark", "aria-hidden": "true" }, mark), " ", health);
}

function loadCells(r, label) {
  const { watermark, hardLimit } = policy();
  const share = (v) => (r.capacity > 0 && Number.isFinite(v) ? v / r.capacity : null);
  return [
    h("td", { class: "num" }, fmtNumber(r.load)),
    h("td", { class: "num" }, fmtNumber(r.planned_load), " ", h("span", { class: "muted" }, `(${fmtPct(r.utilization)})`)),
    h("td", { class: "num" }, fmtNumber(r.capacity)),
    h("td", {}, loadBar({ reported: share(r.load), planned: r.utilization ?? share(r.planned_load),
                          watermark, hardLimit, label })),
  ];
}

export function renderOverview() {
  const s = state.status;
  const notes = clear($("notes"));
  for (const n of (s && s.table && s.table.notes) || []) notes.append(h("li", { class: "note" }, n));
  const regions = clear($("regions").tBodies[0]);
  for (const r of (s && s.regions) || []) {
    regions.append(h("tr", { "data-region": r.region, "data-health": r.health, class: `row-${r.health}` },
      h("th", { scope: "row" }, r.region),
      healthCell(r.health),
      h("td", { class: "why" }, why(r)),
      h("td", {}, r.serving ? "serving" : "not serving"),
      h("td", {}, r.evacuation || "–"),
      ...loadCells(r, r.region)));
  }
  const sites = clear($("sites").tBodies[0]);
  const list = (s && s.sites) || [];
  for (const r of list.slice(0, MAX_SITES_SHOWN)) {
    sites.append(h("tr", { "data-site": r.site, "data-health": r.health, class: `row-${r.health}` },
      h("th", { scope: "row" }, r.site),
      h("td", {}, r.region),
      healthCell(r.health),
      h("td", { class: "why" }, why(r)),
      h("td", {}, r.serving ? "serving" : "not serving"),
      ...loadCells(r, r.site)));
  }
  if (list.length > MAX_SITES_SHOWN) {
    sites.append(h("tr", {}, h("td", { colspan: 9 }, `${list.length - MAX_SITES_SHOWN} more sites not shown`)));
  }
  const evs = clear($("evacuations"));
  const inFlight = (s && s.evacuations) || [];
  $("evacuations-none").hidden = inFlight.length > 0;
  for (const e of inFlight) {
    const pace = e.mode === "now" ? "at once" : `${fmtPct(e.step)} every ${fmtNumber(e.interval_seconds, 1)} s`;
    evs.append(h("li", { "data-evacuation": e.region },
      h("strong", {}, e.region), ` ${e.restoring ? "restoring" : "evacuated"} ${pace}`,
      e.forced ? " (forced)" : "", ` by ${e.actor || "?"} at ${fmtTime(e.started_at)}`,
      e.reason ? `: ${e.reason}` : ""));
  }
}
