// The HTTP API (/api/v1, docs/api.md) with the browser's session cookie. Every failure
// arrives as an ApiError carrying the server's one error shape.

export class ApiError extends Error {
  constructor(status, error) {
    super(error.message);
    this.status = status;
    this.code = error.code;
    this.details = error.details || {};
  }
}

async function failure(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: a proxy's page, say
  }
  const error = (body && body.error) || { code: "internal", message: response.statusText };
  return new ApiError(response.status, error);
}

export async function api(method, path, body) {
  const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (body instanceof FormData) {
    init.body = body;
  } else if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(`/api/v1${path}`, init);
  if (!response.ok) throw await failure(response);
  if (response.status === 204) return null;
  return (response.headers.get("Content-Type") || "").includes("json") ? response.json() : response;
}

export const get = (path) => api("GET", path);
export const post = (path, body = {}) => api("POST", path, body);
export const patch = (path, body) => api("PATCH", path, body);
export const del = (path) => api("DELETE", path);

export function query(params) {
  const pairs = Object.entries(params).filter(([, value]) => value !== undefined && value !== null && value !== "");
  return pairs.length ? "?" + new URLSearchParams(pairs).toString() : "";
}

// A multipart upload that reports its progress (fetch cannot).
export function upload(path, form, onProgress) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("POST", `/api/v1${path}`);
    request.responseType = "json";
    request.setRequestHeader("Accept", "application/json");
    request.upload.onprogress = (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total);
    };
    request.onload = () => {
      const body = request.response;
      if (request.status >= 200 && request.status < 300) resolve(body);
      else reject(new ApiError(request.status, (body && body.error) || { code: "internal", message: request.statusText }));
    };
    request.onerror = () => reject(new ApiError(0, { code: "network", message: "network" }));
    request.send(form);
  });
}
