// Talking to the daemon's /api/: the admin token, JSON calls and the one error shape.
//
// When the daemon answers 401 "unauthorized" the page asks for the admin token once
// (every call waiting at that moment shares the question), keeps it in
// sessionStorage only, and sends the call again. Other 401s, such as Replicate
// refusing its own token, are ordinary errors.

const TOKEN_KEY = "replicate-webhookd.admin-token";

export class ApiError extends Error {
  constructor(status, code, message, field) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field || null;
  }
}

// A header value can only carry Latin-1, and the daemon's tokens are ASCII:
// anything else (an accent, a typographic dash) can never be right, and fetch()
// would throw on every call it went into.
const TOKEN_SHAPE = /^[\x21-\x7e]+$/;
const TOKEN_RULE =
  "A token has only visible ASCII characters: letters, digits and punctuation, " +
  "no spaces, accents or typographic dashes.";

let asking = null;
let dropped = false; // a stored token was not sendable and was thrown away

export function authHeaders() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token && !TOKEN_SHAPE.test(token)) {
    sessionStorage.removeItem(TOKEN_KEY); // never sendable: ask again instead
    dropped = true;
    return {};
  }
  return token ? { Authorization: `Bearer ${token}` } : {};
}

export function isAdminRefusal(response, body) {
  return response.status === 401 && body?.error?.code === "unauthorized";
}

// Ask for the token; resolves once one was entered. `refused`: the last one failed.
export function askForToken(refused) {
  if (asking) return asking;
  const dialog = document.getElementById("token-dialog");
  const form = document.getElementById("token-form");
  const input = document.getElementById("token-input");
  const error = document.getElementById("token-error");
  error.textContent = dropped
    ? `The saved token could not be sent. ${TOKEN_RULE}`
    : refused
      ? "That token was refused. Try again."
      : "";
  dropped = false;
  input.value = "";
  asking = new Promise((resolve) => {
    const submit = (event) => {
      event.preventDefault();
      const token = input.value.trim();
      if (!token) return;
      if (!TOKEN_SHAPE.test(token)) {
        error.textContent = `That cannot be the token. ${TOKEN_RULE}`;
        input.setAttribute("aria-invalid", "true");
        input.focus();
        return;
      }
      input.removeAttribute("aria-invalid");
      sessionStorage.setItem(TOKEN_KEY, token);
      form.removeEventListener("submit", submit);
      dialog.removeEventListener("cancel", stay);
      dialog.close();
      asking = null;
      resolve();
    };
    const stay = (event) => event.preventDefault(); // nothing works without it
    form.addEventListener("submit", submit);
    dialog.addEventListener("cancel", stay);
  });
  if (!dialog.open) dialog.showModal();
  input.focus();
  return asking;
}

async function readBody(response) {
  const type = response.headers.get("Content-Type") || "";
  if (type.startsWith("application/json")) {
    try {
      return await response.json();
    } catch {
      return null;
    }
  }
  return await response.text();
}

// fetch() with the token; asks for it and tries again on the daemon's 401.
export async function authorizedFetch(path, init = {}) {
  for (let refused = false; ; refused = true) {
    const headers = { ...(init.headers || {}), ...authHeaders() };
    const response = await fetch(path, { cache: "no-store", ...init, headers });
    if (response.status !== 401) return response;
    const body = await readBody(response.clone());
    if (!isAdminRefusal(response, body)) return response;
    const hadToken = Boolean(authHeaders().Authorization);
    await askForToken(refused || hadToken);
  }
}

// A JSON call; resolves with the body, or throws ApiError with the daemon's reason.
export async function api(path, { method = "GET", body } = {}) {
  const init = { method };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers = { "Content-Type": "application/json" };
  }
  const response = await authorizedFetch(path, init);
  const data = await readBody(response);
  if (!response.ok) {
    const error = data?.error;
    throw new ApiError(
      response.status,
      error?.code || "http_error",
      error?.message || `${response.status} ${response.statusText}`,
      error?.field,
    );
  }
  return data;
}

// The log from byte `offset`: {bytes, next, total, version}; `next` is the
// offset to ask next, and another `version` means the daemon replaced the log
// with one that does not extend it (read it again from 0).
export async function logsFrom(jobId, offset) {
  const path = `/api/jobs/${encodeURIComponent(jobId)}/logs?offset=${offset}`;
  const response = await authorizedFetch(path);
  if (!response.ok) {
    const data = await readBody(response);
    throw new ApiError(response.status, data?.error?.code, data?.error?.message);
  }
  const bytes = new Uint8Array(await response.arrayBuffer());
  const header = (name, fallback) => {
    const value = response.headers.get(name);
    return value === null ? fallback : Number(value);
  };
  return {
    bytes,
    next: header("X-Next-Offset", offset + bytes.length),
    total: header("X-Log-Bytes", offset + bytes.length),
    version: response.headers.get("X-Log-Version"),
  };
}
