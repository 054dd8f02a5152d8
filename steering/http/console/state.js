// What the console knows, shared by its views (app.js fills it from the API and the stream).

export const HOUR = 3600;

export const state = {
  topology: null,
  status: null,
  statusAt: 0, // performance.now() when the status arrived (the table's age goes on from there)
  samples: [], // [{time, utilization: {target: share | null}}], oldest first, at most an hour
  pins: [],
  timeline: [],
  timelineVersion: null,
  stream: null, // {abort: AbortController, alive: ms}
  connected: false,
  disconnectedSince: null,
  retryAt: 0,
  running: false,
  action: null, // the previewed action: {kind, word, subject, send(dryRun, requestId), requestId}
  watch: null, // the applied action waited for: {action, since, started, audit, change}
};

export function visible(view) {
  const section = document.getElementById(`view-${view}`);
  return Boolean(section) && !section.hidden;
}

// A line for screen readers (the aria-live region): the last few are kept.
export function announce(text) {
  const live = document.getElementById("live");
  const line = document.createElement("p");
  line.textContent = text;
  live.append(line);
  while (live.childNodes.length > 5) live.firstChild.remove();
}

export function policy() {
  const p = (state.topology && state.topology.policy) || {};
  return { watermark: p.watermark ?? 0.8, hardLimit: p.hard_limit ?? 1.0 };
}
