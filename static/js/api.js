// Talking to the service: authentication (session cookie or an embedding app's JWT), JSON
// calls whose failures become sentences, and the meaning of each WebSocket close code.

let jwt = null; // embedded mode: a token from the host app, sent as a Bearer header

export function setJwt(token) {
  jwt = token || null;
}

export function authMode() {
  return jwt ? "jwt" : "cookie";
}

/** An error whose message is a sentence for people; `status` is the HTTP status, if any. */
export class ApiError extends Error {
  constructor(message, status = 0, code = "") {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// Called with the error when a request is refused with 401: the session (cookie or JWT) has
// ended, so the page goes back to sign-in instead of looking signed in.
let unauthorizedHandler = null;
export function onUnauthorized(handler) {
  unauthorizedHandler = handler;
}
export function reportUnauthorized(err) {
  if (err instanceof ApiError && err.status === 401 && unauthorizedHandler) unauthorizedHandler(err);
}

export function authHeaders() {
  return jwt ? { Authorization: `Bearer ${jwt}` } : {};
}

const STATUS_SENTENCES = {
  400: "The service did not accept that request.",
  401: "You are not signed in, or your session has ended. Sign in again.",
  403: "Your key is not allowed to do that.",
  404: "That was not found.",
  409: "That conflicts with something that already exists.",
  413: "That file is too large.",
  429: "Too many requests for now. Wait a moment and try again.",
  502: "AssemblyAI could not be reached or refused the request.",
  503: "The service is not ready. Try again shortly.",
  504: "AssemblyAI took too long to answer.",
};

/** The sentence for a failed response: the service's own `detail` when it sent one. */
export async function errorFromResponse(response) {
  let detail = "";
  let code = "";
  try {
    const body = await response.json();
    code = body.error || "";
    if (typeof body.detail === "string") detail = body.detail;
    else if (Array.isArray(body.detail) && body.detail[0]?.msg) {
      detail = `The request was not valid: ${body.detail[0].msg}.`;
    }
  } catch {
    // not JSON: fall back to the status sentence
  }
  let message = detail || STATUS_SENTENCES[response.status] || `The service answered ${response.status}.`;
  const retry = response.headers.get("Retry-After");
  if (response.status === 429 && retry) message += ` Try again in ${retry} s.`;
  return new ApiError(message, response.status, code);
}

export async function api(path, { method = "GET", body, headers = {}, signal, signIn = false } = {}) {
  const init = {
    method,
    headers: { Accept: "application/json", ...authHeaders(), ...headers },
    credentials: "same-origin",
    signal,
  };
  if (body !== undefined && !(body instanceof FormData)) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  } else if (body !== undefined) {
    init.body = body;
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError("The service could not be reached. Check your connection.");
  }
  if (!response.ok) {
    const err = await errorFromResponse(response);
    if (!signIn) reportUnauthorized(err);
    throw err;
  }
  if (response.status === 204) return null;
  const type = response.headers.get("Content-Type") || "";
  return type.includes("json") ? response.json() : response.text();
}

// Streaming STT and Voice Agent close codes (reference §14), as plain sentences.
const CLOSE_SENTENCES = {
  1000: "The session ended.",
  1001: "The server went away.",
  1006: "The connection dropped.",
  1008: "The session was refused: the temporary token was missing, invalid, expired or already used.",
  1011: "The server hit an error.",
  3005: "The session was cancelled because of an error on AssemblyAI's side.",
  3006: "The server received a message it did not understand.",
  3007: "Audio chunks were the wrong size (each must be 50–1000 ms) or came faster than real time.",
  3008: "The session reached its maximum duration and was closed.",
  3009: "Too many sessions are open at once for this account. Close one and try again.",
};

export function closeSentence(code, reason = "") {
  const sentence = CLOSE_SENTENCES[code] || `The connection closed (code ${code}).`;
  return reason && !CLOSE_SENTENCES[code] ? `${sentence} ${reason}` : sentence;
}

/** A byte count for people: "1.5 MB", "20 KB". */
export function formatBytes(bytes) {
  const units = ["bytes", "KB", "MB", "GB", "TB"];
  let value = Number(bytes) || 0;
  let i = 0;
  while (value >= 1000 && i < units.length - 1) {
    value /= 1000;
    i += 1;
  }
  const shown = i === 0 ? String(Math.round(value)) : value.toFixed(value < 10 ? 1 : 0).replace(/\.0$/, "");
  return `${shown} ${units[i]}`;
}

/** A duration in seconds as m:ss (or h:mm:ss). */
export function formatDuration(seconds) {
  const total = Math.max(0, Math.round(Number(seconds) || 0));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = String(total % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}

/** Turn anything thrown into something a person can read (never a stack trace). */
export function sentence(err) {
  if (err instanceof ApiError) return err.message;
  if (err && err.name === "NotAllowedError") {
    return "Microphone access was refused. Allow it in the browser's site settings and try again.";
  }
  if (err && err.name === "NotFoundError") return "No microphone was found.";
  if (err && err.name === "OverconstrainedError") {
    return "The chosen microphone is not available. Pick another one, or the default.";
  }
  if (err && err.name === "NotReadableError") return "The microphone is in use by another application.";
  if (err && typeof err.message === "string" && err.message && err.message.length < 200) {
    return err.message.endsWith(".") ? err.message : `${err.message}.`;
  }
  return "Something went wrong. Try again.";
}

/** Read a Server-Sent Events stream with fetch (for JWT mode: EventSource can't send headers). */
export async function fetchEvents(path, onEvent, signal) {
  const response = await fetch(path, {
    headers: { Accept: "text/event-stream", ...authHeaders() },
    credentials: "same-origin",
    signal,
  });
  if (!response.ok) {
    const err = await errorFromResponse(response);
    reportUnauthorized(err);
    throw err;
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const event = { type: "message", data: "", lastEventId: "" };
      const data = [];
      for (const line of block.split("\n")) {
        if (!line || line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const val = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") event.type = val;
        else if (field === "data") data.push(val);
        else if (field === "id") event.lastEventId = val;
      }
      if (data.length) {
        event.data = data.join("\n");
        onEvent(event);
      }
    }
  }
}
