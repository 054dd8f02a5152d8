// Traffic: per service, the geo × target matrix of weights; the planned utilization chart.

import * as api from "./api.js";
import { $, clear, fmtPct, h } from "./dom.js";
import { HOUR, policy, state, visible } from "./state.js";
import { lineChart, swatch } from "./svg.js";

export function renderTraffic() {
  const s = state.status;
  const topo = state.topology;
  const box = $("matrices");
  if (!s || !topo) return;
  const previous = new Map();
  for (const cell of box.querySelectorAll("td[data-key]")) previous.set(cell.dataset.key, cell.dataset.weight);
  clear(box);
  const pinned = new Set(state.pins.map((p) => `${p.service}|${p.geo}`));
  for (const svc of topo.services) {
    const weights = (s.geos && s.geos[svc.name]) || {};
    const table = h("table", { class: "grid matrix", "data-service": svc.name },
      h("caption", {}, `${svc.name}: geo × target weights`),
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "geo"),
        ...svc.targets.map((t) => h("th", { scope: "col" }, t)))));
    const body = h("tbody");
    for (const geo of svc.geos) {
      const row = h("tr", { "data-geo": geo }, h("th", { scope: "row" }, geo,
        pinned.has(`${svc.name}|${geo}`) ? h("span", { class: "flag flag-warn" }, "pinned") : null));
      for (const t of svc.targets) {
        const w = (weights[geo] && weights[geo][t]) || 0;
        const key = `${svc.name}|${geo}|${t}`;
        const was = previous.get(key);
        const changed = was !== undefined && Number(was) !== w;
        const cell = h("td", { class: `num weight${w ? "" : " zero"}${changed ? " changed" : ""}`,
                               "data-key": key, "data-weight": w, "data-target": t });
        const fill = h("span", { class: "fill", "aria-hidden": "true" });
        fill.style.width = `${(w / 1000) * 100}%`;
        cell.append(fill, h("span", { class: "value" }, String(w)));
        row.append(cell);
      }
      body.append(row);
    }
    table.append(body);
    box.append(h("div", { class: "scroll" }, table));
  }
}

export async function loadUtilization() {
  try {
    const r = await api.get("/utilization", { seconds: HOUR });
    const samples = (r.body && r.body.samples) || [];
    const last = samples.length ? samples[samples.length - 1].time : 0;
    // keep the live samples newer than what the history has
    state.samples = [...samples, ...state.samples.filter((x) => x.time > last)];
    trimSamples();
    if (visible("traffic")) renderChart();
  } catch {
    // the chart goes on from live samples
  }
}

export function addSample(status) {
  const utilization = {};
  for (const r of status.regions || []) utilization[r.region] = r.utilization;
  const time = Date.now() / 1000;
  const last = state.samples[state.samples.length - 1];
  if (last && time - last.time < 1) state.samples[state.samples.length - 1] = { time, utilization };
  else state.samples.push({ time, utilization });
  trimSamples();
}

function trimSamples() {
  const from = Date.now() / 1000 - HOUR;
  while (state.samples.length && state.samples[0].time < from) state.samples.shift();
}

let chartDrawn = 0;
export function renderChart() {
  if (!state.topology) return;
  chartDrawn = performance.now();
  const { watermark, hardLimit } = policy();
  const names = state.topology.regions.map((r) => r.name);
  const series = names.map((name) => ({
    name, points: state.samples.map((s) => [s.time, s.utilization[name] ?? null]),
  }));
  const now = Date.now() / 1000;
  const chosen = $("chart-window").value;
  let span = Number(chosen) || HOUR;
  if (chosen === "auto") {
    const oldest = state.samples.length ? now - state.samples[0].time : 0;
    span = [300, 900, HOUR].find((s) => s >= oldest) || HOUR;
  }
  const box = clear($("chart"));
  box.append(lineChart({ series, now, span, watermark, hardLimit,
                         label: `Planned utilization of ${names.join(", ")} over the last ${span / 60} minutes; ` +
                                `watermark ${fmtPct(watermark)}, hard limit ${fmtPct(hardLimit)}` }));
  const legend = clear($("chart-legend"));
  names.forEach((name, i) => {
    const last = state.samples.length ? state.samples[state.samples.length - 1].utilization[name] : null;
    legend.append(h("li", {}, swatch(i), ` ${name} `, h("span", { class: "muted" }, `now ${fmtPct(last ?? null)}`)));
  });
  legend.append(h("li", {}, h("span", { class: "key-watermark" }, "dashed: watermark"), " ",
                  h("span", { class: "key-hardlimit" }, "red: hard limit")));
}
setInterval(() => {
  if (visible("traffic") && performance.now() - chartDrawn > 10000) renderChart(); // the time axis moves
}, 5000);

export async function loadPins() {
  try {
    const r = await api.get("/pins");
    state.pins = (r.body && r.body.pins) || [];
    renderTraffic();
  } catch {
    // pins are a decoration of the matrix
  }
}
