// The query API as the page uses it: same origin, the session cookie, JSON errors.

export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.type = error.type || null;
  }
}

export async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, { credentials: "same-origin", cache: "no-store", ...options,
      headers: { Accept: "application/json", ...(options.headers || {}) } });
  } catch (error) {
    throw new ApiError(0, { error: { message: "the aggregator is not reachable (is it running?)" } });
  }
  if (!response.ok) {
    let body = null;
    try {
      body = await response.json();
    } catch (error) {
      body = null;
    }
    throw new ApiError(response.status, body);
  }
  return response.status === 204 ? null : response.json();
}

// Exchanges the read key for the HttpOnly session cookie; the page never keeps the key.
export function signIn(key) {
  return api("/v1/session", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ key }) });
}

export function signOut() {
  return api("/v1/session", { method: "DELETE" });
}

export function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) if (value != null) search.set(name, value);
  const text = search.toString();
  return text ? `?${text}` : "";
}

export const paths = {
  deployments: () => "/v1/deployments",
  metrics: (d, params) => `/v1/deployments/${encodeURIComponent(d)}/metrics${query(params)}`,
  monitors: (d) => `/v1/deployments/${encodeURIComponent(d)}/monitors`,
  violations: (d, params) => `/v1/deployments/${encodeURIComponent(d)}/violations${query(params)}`,
  compare: (d, params) => `/v1/deployments/${encodeURIComponent(d)}/compare${query(params)}`,
  requests: (d, params) => `/v1/deployments/${encodeURIComponent(d)}/requests${query(params)}`,
  request: (id) => `/v1/requests/${encodeURIComponent(id)}`,
  trace: (id) => `/v1/traces/${encodeURIComponent(id)}`,
  stream: (d) => `/v1/stream/metrics${query({ deployment: d })}`,
};
