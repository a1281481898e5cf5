// The one place the page talks to the API. Every call is same-origin with the session cookie; state
// changes need no CSRF token because the browser sends Origin on fetch POST/PATCH/DELETE and the
// server checks it. Every failure becomes an ApiError carrying the server's own message, so the UI can
// always show the user what went wrong instead of a blank section.

export class ApiError extends Error {
  constructor(status, message, { type = null, code = null, param = null } = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.type = type;
    this.code = code;
    this.param = param;
  }
}

let unauthorizedHandler = null;

/** Called (once per 401) when a signed-in request finds the session gone: expired, or ended elsewhere. */
export function onUnauthorized(handler) {
  unauthorizedHandler = handler;
}

export async function api(method, path, body) {
  const init = { method, credentials: "same-origin", headers: { accept: "application/json" }, cache: "no-store" };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, "Could not reach QNP. Check your connection and try again.");
  }
  if (response.status === 204) return null;
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    // A proxy or load balancer error page: not our JSON. Fall through to a generic message.
  }
  if (!response.ok) {
    const error = data && data.error;
    const message =
      (error && error.message) || `QNP answered ${response.status} ${response.statusText || ""}`.trim() + ` to ${method} ${path}.`;
    const err = new ApiError(response.status, message, error || {});
    if (response.status === 401 && unauthorizedHandler) {
      const handler = unauthorizedHandler;
      unauthorizedHandler = null;
      handler(err);
    }
    throw err;
  }
  return data;
}

export const get = (path) => api("GET", path);
export const post = (path, body) => api("POST", path, body);
export const patch = (path, body) => api("PATCH", path, body);
export const del = (path) => api("DELETE", path);
