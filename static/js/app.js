// The page: sign-in (proxy key → session cookie, or a JWT from an embedding app), tabs, and
// the three views. Test hooks live on window.__aai (views) and window.__aaiStats (numbers).
import { mountAgent } from "./agent.js";
import { mountMicrophonePickers } from "./audio.js";
import { ApiError, api, authMode, onUnauthorized, sentence, setJwt } from "./api.js";
import { mountFiles } from "./files.js";
import { mountStt } from "./stt.js";

const stats = {};
window.__aaiStats = stats;

const $ = (id) => document.getElementById(id);

const banner = {
  show(text, kind = "") {
    stats.lastError = text;
    const box = $("banner");
    box.textContent = text;
    box.className = `banner ${kind}`;
    box.hidden = false;
  },
  clear() {
    $("banner").hidden = true;
  },
};

// --- Tabs (arrow keys move between them, as the ARIA tabs pattern expects) ---------------
const tabs = [...document.querySelectorAll('[role="tab"]')];
function selectTab(tab, focus = false) {
  for (const t of tabs) {
    const on = t === tab;
    t.setAttribute("aria-selected", String(on));
    t.tabIndex = on ? 0 : -1;
    $(t.getAttribute("aria-controls")).hidden = !on;
  }
  if (focus) tab.focus();
  history.replaceState(null, "", `#${tab.id.replace("tab-", "")}`); // a reload keeps the view
}
for (const tab of tabs) {
  tab.addEventListener("click", () => selectTab(tab));
  tab.addEventListener("keydown", (e) => {
    const i = tabs.indexOf(tab);
    if (e.key === "ArrowRight") selectTab(tabs[(i + 1) % tabs.length], true);
    else if (e.key === "ArrowLeft") selectTab(tabs[(i - 1 + tabs.length) % tabs.length], true);
    else if (e.key === "Home") selectTab(tabs[0], true);
    else if (e.key === "End") selectTab(tabs[tabs.length - 1], true);
  });
}

// --- Sign-in ----------------------------------------------------------------------------
function showApp(label) {
  $("signin").hidden = true;
  $("tabs").hidden = false;
  $("who").hidden = false;
  $("who-label").textContent = label;
  $("sign-out").hidden = authMode() === "jwt";
}

function showSignIn() {
  $("signin").hidden = false;
  $("tabs").hidden = true;
  $("who").hidden = true;
  for (const t of tabs) $(t.getAttribute("aria-controls")).hidden = true;
  $("signin-key").focus();
}

async function currentSession() {
  try {
    const session = await api("/api/session", { signIn: true });
    // A signed-out visitor gets 200 {"signed_in": false}: no error in the console at load.
    return session && session.signed_in !== false ? session : null;
  } catch (err) {
    if (err instanceof ApiError && [401, 403, 404, 405].includes(err.status)) return null;
    throw err;
  }
}

$("signin-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = $("signin-key");
  banner.clear();
  try {
    const session = await api("/api/session", {
      method: "POST",
      body: { key: input.value.trim() },
      signIn: true,
    });
    input.value = ""; // the key is not kept anywhere on the page
    await enter(session, { focus: true });
  } catch (err) {
    banner.show(sentence(err));
  }
});

$("sign-out").addEventListener("click", async () => {
  try {
    await api("/api/session", { method: "DELETE", signIn: true });
  } catch {
    // already gone: signing out of an ended session still signs out
  }
  location.reload();
});

// Any request refused with 401 means the session (cookie or embedding JWT) has ended: stop
// what is running and go back to sign-in, rather than look signed in with nothing working.
let signedIn = false;
function sessionEnded() {
  if (!signedIn) return;
  signedIn = false;
  stats.sessionEnded = (stats.sessionEnded || 0) + 1;
  for (const view of Object.values(views)) view.halt?.();
  if (authMode() === "jwt") {
    banner.show("The embedding app's sign-in has expired. Reload the app to continue.");
    return;
  }
  showSignIn();
  banner.show("Your session has ended. Sign in again.", "info");
}
onUnauthorized(sessionEnded);

let mounted = false;
const views = {};
window.__aai = views;

async function enter(session, { focus = false } = {}) {
  const label = session?.end_user || session?.key_name || (authMode() === "jwt" ? "Embedded" : "Signed in");
  signedIn = true;
  showApp(label);
  const initial = tabs.find((t) => `#${t.id.replace("tab-", "")}` === location.hash) || tabs[0];
  // After signing in, focus moves to the view's tab (the form it came from is gone).
  selectTab(initial, focus);
  // The live path can follow the signed-in key's policy (live_access): ask again, in place
  // (the views hold this object).
  try {
    Object.assign((stats.config ||= {}), await api("/api/client-config"));
  } catch {
    // keep the configuration read at start-up
  }
  if (mounted) {
    views.files.loadList(true);
    return;
  }
  mounted = true;
  let voices = [];
  try {
    voices = (await api("/api/voices")).voices;
  } catch (err) {
    banner.show(sentence(err));
  }
  views.stt = mountStt($("view-stt"), { stats, banner, config: stats.config || {} });
  views.agent = mountAgent($("view-agent"), { stats, banner, voices });
  views.files = mountFiles($("view-files"), { stats, banner, config: stats.config || {} });
  mountMicrophonePickers();
  const frame = $("stt-frame");
  if (stats.config?.frame_ms) frame.value = String(stats.config.frame_ms);
  views.files.loadList(true);
  document.body.dataset.ready = "true";
}

// --- Embedded mode: a JWT from the host app ------------------------------------------------
async function waitForJwt(allowedOrigins) {
  const fromHash = new URLSearchParams(location.hash.slice(1)).get("jwt");
  if (fromHash) {
    history.replaceState(null, "", location.pathname); // keep the token out of the address bar
    return fromHash;
  }
  if (window.parent === window) return null;
  // Inside an iframe: ask the parent, accept an answer only from a configured origin.
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(null), 1500);
    addEventListener("message", (event) => {
      if (!allowedOrigins.includes(event.origin) || event.data?.type !== "aai-proxy:jwt") return;
      clearTimeout(timer);
      resolve(event.data.token);
    });
    window.parent.postMessage({ type: "aai-proxy:ready" }, "*");
  });
}

async function boot() {
  let config = { embed_origins: [] };
  try {
    config = await api("/api/client-config");
  } catch (err) {
    banner.show(sentence(err));
  }
  stats.config = config;
  const token = await waitForJwt(config.embed_origins || []);
  if (token) {
    setJwt(token);
    // JWT callers refresh by posting a new token at any time.
    addEventListener("message", (event) => {
      if ((config.embed_origins || []).includes(event.origin) && event.data?.type === "aai-proxy:jwt") {
        setJwt(event.data.token);
      }
    });
    await enter(await currentSession().catch(() => null));
    return;
  }
  const session = await currentSession().catch((err) => {
    banner.show(sentence(err));
    return null;
  });
  if (session) await enter(session);
  else showSignIn();
}

boot();
