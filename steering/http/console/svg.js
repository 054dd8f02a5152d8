// The console's charts, drawn as SVG by hand (no library, no CDN): a load bar against capacity with the
// watermark and hard limit, and a line chart of planned utilization over time.

const NS = "http://www.w3.org/2000/svg";

export function el(name, attrs = {}, ...children) {
  const node = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  for (const c of children) node.append(c);
  return node;
}

function title(text) {
  const t = el("title");
  t.textContent = text;
  return t;
}

const pct = (v) => `${Math.round(v * 100)}%`;

// Reported and planned load as shares of capacity, on a scale that always shows the hard limit.
export function loadBar({ reported, planned, watermark, hardLimit, label }) {
  const W = 180;
  const H = 26;
  const top = Math.max(1.2, hardLimit * 1.1, (reported || 0) * 1.05, (planned || 0) * 1.05);
  const x = (v) => Math.max(0, Math.min(W, (v / top) * W));
  const desc = [
    `reported ${reported === null ? "unknown" : pct(reported)}`,
    `planned ${planned === null ? "unknown" : pct(planned)}`,
    `watermark ${pct(watermark)}`,
    `hard limit ${pct(hardLimit)}`,
  ].join(", ");
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img",
                          "aria-label": `${label}: ${desc}`, class: "loadbar" });
  svg.append(title(`${label}: ${desc}`));
  svg.append(el("rect", { x: 0, y: 0, width: W, height: H, class: "bar-bg" }));
  if (reported !== null) svg.append(el("rect", { x: 0, y: 2, width: x(reported), height: 10, class: "bar-reported" }));
  if (planned !== null) {
    const over = planned > hardLimit ? " over" : planned > watermark ? " high" : "";
    svg.append(el("rect", { x: 0, y: 14, width: x(planned), height: 10, class: `bar-planned${over}` }));
  }
  svg.append(el("line", { x1: x(watermark), x2: x(watermark), y1: 0, y2: H, class: "mark-watermark" }));
  svg.append(el("line", { x1: x(hardLimit), x2: x(hardLimit), y1: 0, y2: H, class: "mark-hardlimit" }));
  return svg;
}

const DASHES = ["", "6 3", "2 3", "8 3 2 3", "1 2", "10 4"];

// One line per series over the last `span` seconds; series: [{name, points: [[time, value|null]]}].
export function lineChart({ series, now, span, watermark, hardLimit, label }) {
  const W = 720;
  const H = 240;
  const L = 44;
  const R = 12;
  const T = 10;
  const B = 28;
  let top = Math.max(1.2, hardLimit * 1.1);
  for (const s of series) for (const [, v] of s.points) if (v !== null && v > top) top = v * 1.05;
  const x = (t) => L + ((t - (now - span)) / span) * (W - L - R);
  const y = (v) => T + (1 - v / top) * (H - T - B);
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, class: "linechart", role: "img", "aria-label": label,
                          preserveAspectRatio: "xMidYMid meet" });
  svg.append(title(label));
  for (const v of [0, 0.25, 0.5, 0.75, 1.0, top > 1.25 ? 1.25 : null]) {
    if (v === null || v > top) continue;
    svg.append(el("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid" }));
    const t = el("text", { x: L - 6, y: y(v) + 4, class: "axis", "text-anchor": "end" });
    t.textContent = pct(v);
    svg.append(t);
  }
  for (let q = 0; q <= 4; q++) {
    const ago = span - (q * span) / 4;
    const t = el("text", { x: x(now - ago), y: H - 8, class: "axis", "text-anchor": "middle" });
    t.textContent = q === 4 ? "now" : ago >= 60 ? `-${+(ago / 60).toFixed(1)} min` : `-${Math.round(ago)} s`;
    svg.append(t);
  }
  svg.append(el("line", { x1: L, x2: W - R, y1: y(watermark), y2: y(watermark), class: "mark-watermark" }));
  svg.append(el("line", { x1: L, x2: W - R, y1: y(hardLimit), y2: y(hardLimit), class: "mark-hardlimit" }));
  series.forEach((s, i) => {
    const runs = [];
    let run = [];
    for (const [t, v] of s.points) {
      if (t < now - span) continue;
      if (v === null) {
        if (run.length) runs.push(run);
        run = [];
      } else {
        run.push(`${x(t).toFixed(1)},${y(v).toFixed(1)}`);
      }
    }
    if (run.length) runs.push(run);
    for (const r of runs) {
      const pts = r.length === 1 ? [r[0], `${(parseFloat(r[0]) + 2).toFixed(1)},${r[0].split(",")[1]}`] : r;
      svg.append(el("polyline", { points: pts.join(" "), class: `series series-${i % 6}`,
                                  "stroke-dasharray": DASHES[i % DASHES.length] }));
    }
  });
  return svg;
}

// The legend's sample of a series' line: its colour and dash, beside the name (not colour alone).
export function swatch(i) {
  const svg = el("svg", { viewBox: "0 0 28 10", width: 28, height: 10, "aria-hidden": "true" });
  svg.append(el("line", { x1: 0, x2: 28, y1: 5, y2: 5, class: `series series-${i % 6}`,
                          "stroke-dasharray": DASHES[i % DASHES.length] }));
  return svg;
}
