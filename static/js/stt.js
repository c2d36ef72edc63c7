// Streaming speech-to-text: token from the service, WebSocket straight to AssemblyAI (or the
// emulator), binary PCM16 frames at the audio clock's pace, turns rendered as they change.
import { api, closeSentence, sentence } from "./api.js";
import { readProcessing, startCapture, unlockAudio } from "./audio.js";
import { clampFrameMs } from "./dsp.js";
import { grantPath } from "./relay.js";

const DEFAULT_RATE = 16000;
const TERMINATION_TIMEOUT_MS = 5000;

/** The service's websocket_url already carries the token; add it if a proxy stripped it. */
export function withToken(websocketUrl, token) {
  const url = new URL(websocketUrl, location.href);
  if (url.protocol === "http:") url.protocol = "ws:";
  if (url.protocol === "https:") url.protocol = "wss:";
  if (!url.searchParams.has("token")) url.searchParams.set("token", token);
  return url.toString();
}

/** Move focus from a button that is about to disable itself to one that stays usable. */
export function handFocus(from, to) {
  if (document.activeElement === from && to && !to.disabled) to.focus();
}

function clock(date = new Date()) {
  return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

export function mountStt(root, { stats, config = {} }) {
  // 16 kHz unless the service is configured otherwise (TOKEN_STREAMING_SAMPLE_RATE).
  const RATE = config.stt_sample_rate || DEFAULT_RATE;
  const $ = (id) => root.querySelector(`#${id}`);
  const startBtn = $("stt-start");
  const stopBtn = $("stt-stop");
  const status = $("stt-status");
  const turnsBox = $("stt-turns");
  const meter = $("stt-meter");

  let ws = null;
  let capture = null;
  let stopping = false;
  let terminated = null; // resolves when Termination arrives or the socket closes
  let refocus = false;
  let sessions = 0; // sessions started on this page (a divider goes between them)
  const turns = new Map(); // turn_order → element
  const s = (stats.stt = {
    framesSent: 0,
    bytesSent: 0,
    turns: 0,
    finals: 0,
    state: "idle",
    closeCode: null,
    sessions: 0,
  });

  function setStatus(text, kind = "") {
    status.textContent = text;
    status.className = `status ${kind}`;
    s.state = text;
  }

  function renderTurn(msg) {
    turnsBox.querySelector(".empty")?.remove();
    let el = turns.get(msg.turn_order);
    if (!el) {
      el = document.createElement("p");
      el.className = "turn";
      el.dataset.at = clock();
      turns.set(msg.turn_order, el);
      turnsBox.append(el);
      s.turns += 1;
    }
    el.classList.toggle("partial", !msg.end_of_turn);
    el.replaceChildren();
    const time = document.createElement("time");
    time.textContent = el.dataset.at; // when the turn began, on this computer's clock
    el.append(time);
    if (msg.speaker_label) {
      const who = document.createElement("span");
      who.className = "speaker";
      who.textContent = `Speaker ${msg.speaker_label}:`;
      el.append(who);
    }
    el.append(document.createTextNode(msg.transcript || ""));
    if (msg.end_of_turn) s.finals += 1;
  }

  function onMessage(event) {
    if (typeof event.data !== "string") return;
    let msg;
    try {
      msg = JSON.parse(event.data);
    } catch {
      return;
    }
    if (msg.type === "Begin") {
      setStatus("Listening", "live");
      s.sessionId = msg.id;
      beginCapture().catch(fail);
    } else if (msg.type === "Turn") {
      renderTurn(msg);
    } else if (msg.type === "Termination") {
      s.terminated = true;
      s.audioDurationSeconds = msg.audio_duration_seconds;
      terminated?.resolve();
    } else if (msg.type === "Error" || msg.error) {
      setStatus(msg.error || "The server reported an error.", "error");
    }
  }

  // Frames come at the audio clock's pace. After a stall (a busy main thread, a suspended
  // tab) several arrive at once; sending them as a burst would look faster than real time
  // to the server (close 3007). A leaky bucket drained at real time, like the server's own
  // check, lets at most 300 ms run ahead and spreads the rest of such a burst out.
  const MAX_AHEAD_MS = 300;
  let queue = [];
  let bucketMs = 0;
  let bucketAt = 0;
  let drainTimer = null;

  function pace(pcm) {
    queue.push(pcm);
    drain();
  }

  function drain() {
    drainTimer = null;
    const now = performance.now();
    bucketMs = Math.max(0, bucketMs - (now - bucketAt));
    bucketAt = now;
    while (queue.length && ws && ws.readyState === WebSocket.OPEN && !s.terminateSent) {
      if (bucketMs > MAX_AHEAD_MS) break;
      const pcm = queue.shift();
      ws.send(pcm);
      bucketMs += (pcm.byteLength / 2 / RATE) * 1000;
      s.sendLog.push([now, pcm.byteLength]); // [performance.now() ms, bytes], for tests
      if (s.sendLog.length > 2000) s.sendLog.splice(0, 1000);
      s.framesSent += 1;
      s.bytesSent += pcm.byteLength;
    }
    s.queued = queue.length;
    if (queue.length && !drainTimer) drainTimer = setTimeout(drain, bucketMs - MAX_AHEAD_MS + 1);
  }

  async function drained(timeoutMs) {
    const deadline = performance.now() + timeoutMs;
    while (queue.length && ws && ws.readyState === WebSocket.OPEN && performance.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  async function beginCapture() {
    capture = await startCapture({
      deviceId: $("stt-mic").value,
      targetRate: RATE,
      frameMs: clampFrameMs($("stt-frame").value),
      processing: readProcessing(root),
      meter,
      onFrame: pace,
      // Test hook: with window.__aaiTap set, keep what the microphone delivered.
      onTap: window.__aaiTap ? (samples) => s.tap.push(samples) : undefined,
    });
    s.contextRate = capture.contextRate;
  }

  function fail(err) {
    setStatus(sentence(err), "error");
    s.failed = sentence(err);
    // The socket may be open (e.g. the microphone was refused after Begin): end the session
    // properly, so it stops being billed, without its close replacing this message.
    const socket = ws;
    if (socket) {
      socket.onclose = (event) => {
        s.closeCode = event.code;
        terminated?.resolve?.();
      };
      sendTerminate();
      if (socket.readyState === WebSocket.CONNECTING) socket.onopen = () => socket.close(1000, "failed");
      else if (socket.readyState === WebSocket.OPEN) {
        // Give Termination a moment, then close whatever the server did.
        const ended = terminated; // this session's, even if Start is pressed again meanwhile
        Promise.race([ended, new Promise((r) => setTimeout(r, TERMINATION_TIMEOUT_MS))]).then(() => {
          if (socket.readyState === WebSocket.OPEN) socket.close(1000, "failed");
        });
      }
    }
    cleanup();
    startBtn.textContent = "Start";
  }

  async function start() {
    if (ws) return;
    unlockAudio(); // inside the click, before any await
    stopBtn.disabled = false;
    handFocus(startBtn, stopBtn);
    startBtn.disabled = true;
    stopping = false;
    s.failed = null;
    s.terminateSent = false;
    s.terminated = false;
    s.closeCode = null;
    s.sendLog = [];
    s.tap = [];
    turns.clear(); // turn_order starts again at 0 in a new session; earlier turns stay shown
    sessions += 1;
    s.sessions = sessions;
    if (turnsBox.querySelector(".turn")) {
      const divider = document.createElement("p");
      divider.className = "divider";
      divider.textContent = `New session, ${clock()}`;
      turnsBox.append(divider);
    }
    setStatus("Connecting…");
    try {
      // Every (re)connection mints a fresh single-use token.
      // The service puts the host and these options into websocket_url (with the token).
      const options = { sample_rate: RATE, encoding: "pcm_s16le" };
      s.sampleRate = RATE;
      if ($("stt-speakers").checked) options.speaker_labels = true;
      const grant = await api(grantPath(config, "streaming"), { method: "POST", body: options });
      if (stopping) {
        // Stopped before the connection was made: nothing to end.
        cleanup();
        setStatus("Stopped");
        return;
      }
      ws = new WebSocket(withToken(grant.websocket_url, grant.token));
      ws.binaryType = "arraybuffer";
      let resolve;
      terminated = new Promise((r) => (resolve = r));
      terminated.resolve = resolve;
      ws.onmessage = onMessage;
      ws.onclose = (event) => onClose(event);
    } catch (err) {
      fail(err);
    }
  }

  function onClose(event) {
    s.closeCode = event.code;
    terminated?.resolve?.();
    const clean = stopping && (event.code === 1000 || event.code === 1005);
    if (clean) setStatus("Stopped");
    else {
      setStatus(closeSentence(event.code, event.reason), "error");
      startBtn.textContent = "Reconnect";
    }
    cleanup();
  }

  function sendTerminate() {
    if (ws && ws.readyState === WebSocket.OPEN && !s.terminateSent) {
      ws.send(JSON.stringify({ type: "Terminate" }));
      s.terminateSent = true;
    }
  }

  async function stop() {
    if (!ws) {
      // Stop while the token is still being minted: the start gives up when it arrives.
      if (startBtn.disabled && !stopping) {
        stopping = true;
        refocus = document.activeElement === stopBtn;
        stopBtn.disabled = true;
        setStatus("Stopping…");
      }
      return;
    }
    stopping = true;
    refocus = document.activeElement === stopBtn; // Start gets it back once enabled
    stopBtn.disabled = true;
    setStatus("Finishing…");
    // The capture's last partial frame goes out before Terminate.
    if (capture) await capture.stop().catch(() => {});
    capture = null;
    await drained(3000);
    sendTerminate();
    const socket = ws;
    await Promise.race([terminated, new Promise((r) => setTimeout(r, TERMINATION_TIMEOUT_MS))]);
    if (socket.readyState === WebSocket.OPEN) socket.close(1000, "done");
  }

  function cleanup() {
    if (capture) capture.stop().catch(() => {});
    capture = null;
    queue = [];
    bucketMs = 0;
    clearTimeout(drainTimer);
    drainTimer = null;
    ws = null;
    // Words still dimmed when the session ends will not firm up now: show them as cut off.
    for (const el of turnsBox.querySelectorAll(".turn.partial")) {
      el.classList.remove("partial");
      el.classList.add("unfinished");
    }
    startBtn.disabled = false;
    if (refocus || document.activeElement === stopBtn) startBtn.focus();
    refocus = false;
    stopBtn.disabled = true;
    if (!stopping) return;
    startBtn.textContent = "Start";
  }

  function clear() {
    for (const el of [...turnsBox.children]) el.remove();
    turns.clear();
    const empty = document.createElement("p");
    empty.className = "muted empty";
    empty.textContent = "Cleared. Press Start and speak.";
    turnsBox.append(empty);
  }

  startBtn.addEventListener("click", start);
  stopBtn.addEventListener("click", stop);
  $("stt-clear").addEventListener("click", clear);
  // Closing or leaving the page still ends the session, so it stops being billed.
  addEventListener("pagehide", sendTerminate);
  return {
    start,
    stop,
    clear,
    halt: () => (ws ? stop() : undefined),
    // For tests: drop the socket as a network failure would.
    drop: () => ws?.close(4000, "test drop"),
  };
}
