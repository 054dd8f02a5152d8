// The console's calls to the REST API (docs/rest-api.md) and its live stream (docs/console.md).
//
// Auth is a bearer token kept in sessionStorage (gone when the tab closes). EventSource cannot send an
// Authorization header, so the stream is read with fetch() and a ReadableStream and parsed here.

const TOKEN_KEY = "steering.console.token";
const API = "/api/v1";
let memoryToken = ""; // when sessionStorage is refused

export function token() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || memoryToken;
  } catch {
    return memoryToken;
  }
}

export function setToken(value) {
  try {
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // storage refused (private mode): the token lives only as long as this page
  }
  memoryToken = value || "";
}


function headers(extra) {
  const h = { Accept: "application/json", ...extra };
  const t = token();
  if (t) h.Authorization = `Bearer ${t}`;
  return h;
}

// A refusal of the API: its status and the JSON error body ({"error": {...}, "preview": ...}).
export class ApiError extends Error {
  constructor(status, body) {
    const err = (body && body.error) || {};
    super(err.message || `HTTP ${status}`);
    this.status = status;
    this.code = err.code || "";
    this.field = err.field || null;
    this.rules = Array.isArray(err.rules) ? err.rules : [];
    this.preview = (body && body.preview) || null;
  }
}

// Listeners told when the API says 401: the console shows its sign-in form.
const unauthorized = new Set();
export function onUnauthorized(fn) {
  unauthorized.add(fn);
}
export function signalUnauthorized(message) {
  for (const fn of unauthorized) fn(message);
}

export async function call(method, path, { body, query } = {}) {
  let url = API + path;
  if (query) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
    const text = q.toString();
    if (text) url += `?${text}`;
  }
  const init = { method, headers: headers(body !== undefined ? { "Content-Type": "application/json" } : {}),
                 cache: "no-store" };
  if (body !== undefined) init.body = JSON.stringify(body);
  let resp;
  try {
    resp = await fetch(url, init);
  } catch (e) {
    throw new ApiError(0, { error: { message: `the controller cannot be reached (${e.message})`, code: "network" } });
  }
  let data = null;
  const type = resp.headers.get("Content-Type") || "";
  if (type.startsWith("application/json")) {
    try {
      data = await resp.json();
    } catch {
      data = null;
    }
  }
  if (!resp.ok) {
    const err = new ApiError(resp.status, data);
    if (resp.status === 401) signalUnauthorized(err.message);
    throw err;
  }
  return { status: resp.status, body: data };
}

export const get = (path, query) => call("GET", path, { query });

// Server-Sent Events read with fetch: calls onEvent(name, data) per event, onAlive() on any bytes (pings too).
// Resolves when the stream ends; rejects on a network failure or a refusal (ApiError).
export async function readStream(signal, onEvent, onAlive) {
  const resp = await fetch(`${API}/stream`, { headers: headers({ Accept: "text/event-stream" }), signal,
                                               cache: "no-store" });
  if (!resp.ok) {
    let data = null;
    try {
      data = await resp.json();
    } catch {
      data = null;
    }
    const err = new ApiError(resp.status, data);
    if (resp.status === 401) signalUnauthorized(err.message);
    throw err;
  }
  const reader = resp.body.getReader();
  try {
    await parseEvents(reader, onEvent, onAlive);
  } finally {
    reader.cancel().catch(() => {});
  }
}

async function parseEvents(reader, onEvent, onAlive) {
  const decoder = new TextDecoder();
  let buffer = "";
  let name = "";
  let data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    onAlive();
    buffer += decoder.decode(value, { stream: true });
    let nl;
    while ((nl = buffer.search(/\r\n|\r|\n/)) >= 0) {
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + (buffer.startsWith("\r\n", nl) ? 2 : 1));
      if (line === "") {
        if (data.length) onEvent(name || "message", data.join("\n"));
        name = "";
        data = [];
        continue;
      }
      if (line.startsWith(":")) continue; // a comment: the server's ping
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let val = colon < 0 ? "" : line.slice(colon + 1);
      if (val.startsWith(" ")) val = val.slice(1);
      if (field === "event") name = val;
      else if (field === "data") data.push(val);
    }
    if (buffer.length > 4 * 1024 * 1024) throw new Error("the stream sent a line over 4 MiB");
  }
}
