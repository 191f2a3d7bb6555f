// Calls to the live API (/api/v1, relative to this page, so a reverse proxy may serve
// both under a prefix). Errors become ApiError with a message meant for the page.

const KEY_STORAGE = "tlc_jax.live.apiKey";
const BASE = new URL("api/v1/", document.baseURI);

export function getKey() {
  try {
    return localStorage.getItem(KEY_STORAGE) || "";
  } catch {
    return "";
  }
}

export function setKey(key) {
  try {
    if (key) localStorage.setItem(KEY_STORAGE, key);
    else localStorage.removeItem(KEY_STORAGE);
  } catch {
    // Storage disabled: the key lasts for this page only.
  }
  window.dispatchEvent(new CustomEvent("apikeychange"));
}

export class ApiError extends Error {
  constructor(message, { status = 0, body = null, retryAfter = null } = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.body = body;
    this.retryAfter = retryAfter;
  }
}

/** The URL of an API path ("devices/cam/frames") with query parameters (empty ones left
 * out). */
export function apiUrl(path, params = {}) {
  const url = new URL(path.replace(/^\/+/, ""), BASE);
  for (const [k, v] of Object.entries(params)) {
    if (v !== null && v !== undefined && v !== "") url.searchParams.set(k, String(v));
  }
  return url;
}

/** A path segment: encodeURIComponent, which leaves nothing that changes the path. */
export function seg(value) {
  return encodeURIComponent(String(value));
}

function detailText(detail) {
  if (detail === null || detail === undefined) return "";
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    // A 422 (InputErrors): [{loc: ["body", "params", "url"], msg: "..."}, ...]; shown
    // as "params.url: ...".
    return detail.map((e) => {
      const where = Array.isArray(e.loc)
        ? e.loc.filter((p) => p !== "query" && p !== "body").join(".") : "";
      return `${where ? where + ": " : ""}${e.msg ?? JSON.stringify(e)}`;
    }).join("; ");
  }
  return JSON.stringify(detail);
}

function explain(status, detail, retryAfter) {
  let why = detail ? `: ${detail}` : "";
  if (!/[.!?)]$/.test(why)) why += ".";
  switch (true) {
    case status === 401:
      return `401 Unauthorized${why} Set a valid API key (“API key” at the top).`;
    case status === 403:
      return `403 Forbidden${why}`;
    case status === 404:
      return `404 Not found${why}`;
    case status === 422:
      return `422 Invalid request${why}`;
    case status === 429:
      return `429 Too many requests${why}` +
        (retryAfter ? ` Retrying after ${retryAfter} s.` : "");
    case status >= 500:
      return `Server error ${status}${why}`;
    default:
      return `HTTP ${status}${why}`;
  }
}

async function request(path, params, { signal, accept = "application/json" } = {}) {
  const headers = { Accept: accept };
  const key = getKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  let response;
  try {
    // JSON is always fresh; images are immutable (the API says so), so cached ones do.
    const cache = accept === "application/json" ? "no-store" : "default";
    response = await fetch(apiUrl(path, params), { headers, signal, cache });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(`Cannot reach the server (${e.message}).`);
  }
  if (!response.ok) {
    let body = null;
    try {
      body = await response.json();
    } catch {
      // Not JSON (a proxy's error page): the status says enough.
    }
    const retryAfter = Number(response.headers.get("Retry-After")) || null;
    throw new ApiError(explain(response.status, detailText(body?.detail), retryAfter),
      { status: response.status, body, retryAfter });
  }
  return response;
}

/** GET a JSON document. */
export async function api(path, params = {}, options = {}) {
  const response = await request(path, params, options);
  return response.json();
}

/** GET bytes (a frame image) as a Blob: fetch can send the key, an <img src> cannot. */
export async function apiBlob(path, options = {}) {
  const response = await request(path, {}, { ...options, accept: "image/*" });
  return response.blob();
}

/** Seconds to wait before the next automatic refresh after an error. */
export function backoff(error, normal) {
  if (error?.status === 429 && error.retryAfter) return Math.max(normal, error.retryAfter);
  if (error?.status >= 500 || error?.status === 0) return Math.max(normal, 10);
  return normal;
}
