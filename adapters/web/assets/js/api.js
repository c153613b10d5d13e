// The API client: the token lives in this module's memory only (never localStorage,
// sessionStorage or a cookie), so a reload means signing in again.

let token = null;
let who = null; // { username, role, userId }

export class ApiError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function signedIn() {
  return token !== null;
}

export function whoami() {
  return who;
}

export function currentToken() {
  return token;
}

/** The claims of a JWT (no check: the server checks it on every request). */
function claims(jwt) {
  try {
    const part = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part));
  } catch {
    return {};
  }
}

const onSignOut = [];
/** Runs `f` when the token is forgotten (sign out, or the server refused it). */
export function whenSignedOut(f) {
  onSignOut.push(f);
}

function forget() {
  token = null;
  who = null;
  for (const f of onSignOut) f();
}

/** The words of a failed answer: the API's `error`, else the status. */
async function failure(resp) {
  let message = `${resp.status} ${resp.statusText}`;
  let code;
  try {
    const body = await resp.json();
    if (body && typeof body.error === "string") {
      message = body.error;
      code = body.code;
    }
  } catch {
    // Not JSON: keep the status line.
  }
  return new ApiError(resp.status, message, code);
}

/** A request with the token; `body` (an object) is sent as JSON. Answers the Response. */
export async function raw(method, path, { body, headers = {}, signal } = {}) {
  const h = { ...headers };
  if (token) h.Authorization = `Bearer ${token}`;
  let payload;
  if (body !== undefined) {
    h["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, { method, headers: h, body: payload, signal });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, `cannot reach the server: ${e.message}`, "network");
  }
  if (!resp.ok) {
    const err = await failure(resp);
    if (resp.status === 401 && token && path !== "/api/v1/auth/logout") {
      forget();
      err.message = `${err.message} — please sign in again`;
    }
    throw err;
  }
  return resp;
}

/** A JSON request; answers the parsed body (null for 204). */
export async function api(method, path, body) {
  const resp = await raw(method, path, { body });
  if (resp.status === 204) return null;
  const text = await resp.text();
  return text ? JSON.parse(text) : null;
}

export async function login(username, password) {
  const body = await api("POST", "/api/v1/auth/login", { username, password });
  token = body.token;
  const c = claims(token);
  who = { username, role: c.role || "", userId: c.sub || "" };
  return who;
}

export async function logout() {
  try {
    if (token) await api("POST", "/api/v1/auth/logout");
  } finally {
    forget();
  }
}

/** The ws:// or wss:// URL of an API path, with the token as `access_token`. */
export function wsUrl(path, params = {}) {
  const url = new URL(path, location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  url.searchParams.set("access_token", token || "");
  for (const [k, v] of Object.entries(params)) url.searchParams.set(k, String(v));
  return url.toString();
}

/** An API path with a query string from the non-empty values of `params`. */
export function withQuery(path, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `${path}?${s}` : path;
}
