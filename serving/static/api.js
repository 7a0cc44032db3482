// The API as the page calls it: same origin, the session cookie, JSON errors as ApiError.

export class ApiError extends Error {
  constructor(status, code, message, { retryAfter = null, requestId = null } = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
    this.requestId = requestId;
  }
}

// Every state-changing call carries this header: the server refuses cookie-authenticated
// POST/DELETE without it (CSRF).
const CSRF = { "X-Requested-With": "rag-page" };

export async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") Object.assign(headers, CSRF);
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let resp;
  try {
    resp = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
    });
  } catch {
    throw new ApiError(0, "network", "The server could not be reached.");
  }
  if (resp.status === 204) return null;
  let data = null;
  try {
    data = await resp.json();
  } catch {
    data = null;
  }
  if (!resp.ok) {
    throw new ApiError(
      resp.status,
      (data && data.code) || "error",
      (data && data.message) || `HTTP ${resp.status}`,
      {
        retryAfter: resp.headers.get("Retry-After"),
        requestId: (data && data.request_id) || resp.headers.get("X-Request-ID"),
      },
    );
  }
  return data;
}

export function query(params) {
  const qs = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null || v === "") continue;
    if (Array.isArray(v)) {
      for (const item of v) qs.append(k, item);
    } else {
      qs.append(k, String(v));
    }
  }
  return qs.toString();
}
