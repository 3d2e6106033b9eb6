// The admin API as the page uses it: same-origin fetch with the session cookie, plus the CSRF token on changes.
let csrfToken = null;
let onSignedOut = () => {};

export function setCsrf(token) { csrfToken = token; }
export function whenSignedOut(callback) { onSignedOut = callback; }

// What a failed call tells the user: the API's own {"error": "..."} message when there is one.
export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

// status → true: the route is not on this agfast (an older build, or a feature not there yet).
export function missing(err) { return err instanceof ApiError && (err.status === 404 || err.status === 405); }

export async function api(method, path, body) {
  const headers = { "Accept": "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && csrfToken) headers["X-CSRF-Token"] = csrfToken;
  let resp;
  try {
    resp = await fetch(path, {
      method, headers, credentials: "same-origin", cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    throw new ApiError(0, "agfast does not answer (is it running?)");
  }
  let data = null;
  const text = await resp.text();
  if (text) {
    try { data = JSON.parse(text); } catch (err) { data = text; }
  }
  if (resp.status === 401 && path !== "/api/session") {
    csrfToken = null;
    onSignedOut();
  }
  if (!resp.ok) {
    const message = data && typeof data === "object" && typeof data.error === "string"
      ? data.error : `${method} ${path}: HTTP ${resp.status}`;
    throw new ApiError(resp.status, message);
  }
  return data;
}

// The query string of `params` (entries with null/undefined/"" left out).
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== null && v !== undefined && v !== "") q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}
