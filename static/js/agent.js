// Voice Agent: one WebSocket, speech in (base64 PCM16 24 kHz in `input.audio`), speech out
// (`reply.audio` into the playback worklet's ring buffer), transcripts, a demo tool, resume.
import { api, closeSentence, sentence } from "./api.js";
import { readProcessing, startCapture, startPlayback, unlockAudio } from "./audio.js";
import { base64ToBytes, bytesToBase64 } from "./dsp.js";
import { handFocus, withToken } from "./stt.js";
import { grantPath } from "./relay.js";

const RATE = 24000;
const RESUME_WINDOW_MS = 30000;

// The demo tool, in the Voice Agent's flat schema (not OpenAI's nested form).
const TOOLS = [
  {
    type: "function",
    name: "get_time",
    description: "Get the current local date and time of the user.",
    parameters: { type: "object", properties: {}, required: [] },
  },
];

function runTool(name) {
  if (name === "get_time") {
    const now = new Date();
    return {
      iso: now.toISOString(),
      local: now.toLocaleString(),
      timezone: Intl.DateTimeFormat().resolvedOptions().timeZone,
    };
  }
  return { error: `unknown tool ${name}` };
}

export function mountAgent(root, { stats, voices }) {
  const $ = (id) => root.querySelector(`#${id}`);
  const startBtn = $("agent-start");
  const stopBtn = $("agent-stop");
  const status = $("agent-status");
  const log = $("agent-log");
  const voiceSelect = $("agent-voice");

  const s = (stats.agent = {
    state: "idle",
    events: [], // types received, in order (reply.audio left out)
    sent: [], // types sent, in order (only the first input.audio)
    timeline: [], // both directions in order: ">type" sent, "<type" received
    audioChunksSent: 0,
    replyAudioSamples: 0,
    toolResults: 0,
    resumes: 0,
    playback: null,
  });

  let ws = null;
  let failed = false; // a local failure (e.g. the microphone refused) ends the call: no resume
  let refocus = false;
  let capture = null;
  let playback = null;
  let ready = false;
  let hangingUp = false;
  let sessionId = null;
  let lastCloseAt = 0;
  let pendingTools = [];
  let userPartial = null;
  let muted = false;
  let agentBubble = null;

  voiceSelect.replaceChildren(
    ...voices.map((v) => {
      const o = document.createElement("option");
      o.value = v.id;
      o.textContent = `${v.id} — ${v.description} (${v.language})`;
      return o;
    }),
  );
  voiceSelect.value = voices.some((v) => v.id === "ivy") ? "ivy" : voices[0]?.id || "";

  function setStatus(text, kind = "") {
    status.textContent = text;
    status.className = `status ${kind}`;
    s.state = text;
  }

  const SPEAKERS = { user: "You", agent: "Agent" };

  /** A message; user and agent bubbles say who spoke. Returns the element whose text changes. */
  function bubble(kind, text, partial = false) {
    log.querySelector(".empty")?.remove();
    const el = document.createElement("p");
    el.className = `msg ${kind}${partial ? " partial" : ""}`;
    const body = document.createElement("span");
    body.className = "text";
    body.textContent = text;
    const who = SPEAKERS[kind];
    if (who) {
      const label = document.createElement("span");
      label.className = "who-said";
      label.textContent = `${who}:`;
      el.append(label, " ");
    }
    el.append(body);
    log.append(el);
    el.scrollIntoView({ block: "nearest" });
    return body;
  }

  function send(event) {
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(JSON.stringify(event));
    if (event.type !== "input.audio" || s.audioChunksSent === 0) {
      s.sent.push(event.type);
      s.timeline.push(`>${event.type}`);
    }
    return true;
  }

  function sessionConfig() {
    return {
      system_prompt: $("agent-prompt").value,
      greeting: $("agent-greeting").value,
      input: {
        format: { encoding: "audio/pcm" },
        turn_detection: { interrupt_response: true },
      },
      output: { voice: voiceSelect.value, format: { encoding: "audio/pcm" } },
      tools: TOOLS,
    };
  }

  async function connect(resumeId) {
    const grant = await api(grantPath(stats.config, "agents"), { method: "POST", body: {} });
    ws = new WebSocket(withToken(grant.websocket_url, grant.token));
    ready = false;
    ws.onopen = () => {
      // session.update at once (not after session.ready); resume instead when reconnecting.
      if (resumeId) {
        send({ type: "session.resume", session_id: resumeId });
        s.resumes += 1;
      } else send({ type: "session.update", session: sessionConfig() });
    };
    ws.onmessage = onMessage;
    ws.onclose = onClose;
  }

  function onMessage(event) {
    let msg;
    try {
      msg = JSON.parse(event.data);
    } catch {
      return;
    }
    if (msg.type !== "reply.audio") {
      s.events.push(msg.type);
      s.timeline.push(`<${msg.type}`);
    }
    switch (msg.type) {
      case "session.ready":
        ready = true;
        sessionId = msg.session_id || sessionId;
        s.sessionId = sessionId;
        setStatus("Listening", "live");
        if (!capture) beginCapture().catch(fail);
        break;
      case "input.speech.started":
        setStatus("Hearing you", "live");
        break;
      case "input.speech.stopped":
        setStatus("Thinking…", "live");
        break;
      case "transcript.user.delta":
        if (!userPartial) userPartial = bubble("user", "", true);
        userPartial.textContent = msg.text ?? msg.transcript ?? msg.delta ?? "";
        break;
      case "transcript.user":
        if (userPartial) userPartial.parentElement.remove();
        userPartial = null;
        bubble("user", msg.text ?? msg.transcript ?? "");
        break;
      case "reply.started":
        agentBubble = null;
        setStatus("Speaking", "live");
        break;
      case "reply.audio": {
        const bytes = base64ToBytes(msg.data || "");
        s.replyAudioSamples += bytes.byteLength >> 1;
        playback?.push(bytes.buffer);
        break;
      }
      case "transcript.agent":
        if (!agentBubble) agentBubble = bubble("agent", "");
        agentBubble.textContent = msg.text ?? msg.transcript ?? "";
        break;
      case "tool.call":
        pendingTools.push({ call_id: msg.call_id, result: runTool(msg.name, msg.arguments) });
        bubble("system tool", `Tool call: ${msg.name}()`);
        break;
      case "reply.done":
        if (msg.status === "interrupted") {
          playback?.flush();
          pendingTools = []; // the user barged in: those results answer nothing now
          s.interruptions = (s.interruptions || 0) + 1;
          bubble("system", "Interrupted.");
        } else {
          playback?.end();
          for (const t of pendingTools) {
            send({ type: "tool.result", call_id: t.call_id, result: JSON.stringify(t.result) });
            s.toolResults += 1;
          }
          pendingTools = [];
        }
        setStatus("Listening", "live");
        break;
      case "error":
      case "session.error":
        bubble("system error", `The agent reported an error: ${msg.message || msg.error || "no detail"}`);
        s.errors = (s.errors || 0) + 1;
        break;
      default:
        break;
    }
  }

  async function beginCapture() {
    capture = await startCapture({
      deviceId: $("agent-mic").value,
      targetRate: RATE,
      frameMs: 50,
      processing: readProcessing(root),
      meter: $("agent-meter"),
      onFrame(pcm) {
        if (!ready) return; // input.audio only after session.ready
        // Muted: silence of the same length, so the server's turn detection still sees time pass.
        if (muted) pcm = new ArrayBuffer(pcm.byteLength);
        if (send({ type: "input.audio", audio: bytesToBase64(pcm) })) s.audioChunksSent += 1;
      },
    });
  }

  function onClose(event) {
    ready = false;
    s.closeCode = event.code;
    ws = null;
    if (hangingUp || failed) {
      if (!failed) setStatus("Ended");
      teardown();
      return;
    }
    const since = Date.now() - lastCloseAt;
    lastCloseAt = Date.now();
    // A dropped connection: within 30 s the session can be resumed with a fresh token.
    if (sessionId && event.code !== 1008 && since > 2000) {
      setStatus("Reconnecting…");
      playback?.flush();
      connect(sessionId).catch(fail);
      setTimeout(() => {
        if (!ready && !hangingUp && ws === null) fail(new Error(closeSentence(event.code)));
      }, RESUME_WINDOW_MS);
      return;
    }
    setStatus(closeSentence(event.code, event.reason), "error");
    teardown();
  }

  function fail(err) {
    // Say what went wrong and end the call: a refused microphone is not a dropped
    // connection, so no resume session is opened and the close code is not the message.
    failed = true;
    setStatus(sentence(err), "error");
    s.failed = sentence(err);
    if (ws) ws.close(1000, "failed");
    teardown();
  }

  async function start() {
    unlockAudio(); // inside the click, before any await
    stopBtn.disabled = false;
    handFocus(startBtn, stopBtn);
    startBtn.disabled = true;
    hangingUp = false;
    failed = false;
    s.failed = null;
    sessionId = null;
    // A new call: tool results owed to an earlier call answer nothing in this one.
    pendingTools = [];
    userPartial = null;
    agentBubble = null;
    setStatus("Connecting…");
    try {
      playback = await startPlayback({
        onStats(stat) {
          s.playback = stat;
        },
      });
      await connect(null);
    } catch (err) {
      fail(err);
    }
  }

  async function stop() {
    hangingUp = true;
    refocus = document.activeElement === stopBtn;
    stopBtn.disabled = true;
    if (capture) await capture.stop().catch(() => {});
    capture = null;
    if (ws) ws.close(1000, "hang up");
    else teardown();
  }

  function teardown() {
    if (capture) capture.stop().catch(() => {});
    capture = null;
    playback?.stop();
    playback = null;
    pendingTools = [];
    startBtn.disabled = false;
    if (refocus || document.activeElement === stopBtn) startBtn.focus();
    refocus = false;
    stopBtn.disabled = true;
  }

  function clear() {
    for (const el of [...log.children]) el.remove();
    userPartial = null;
    agentBubble = null;
    const empty = document.createElement("p");
    empty.className = "muted empty";
    empty.textContent = "Cleared. Press Talk to start a new conversation.";
    log.append(empty);
  }

  const muteBtn = $("agent-mute");
  muteBtn.addEventListener("click", () => {
    muted = !muted;
    muteBtn.setAttribute("aria-pressed", String(muted));
    muteBtn.textContent = muted ? "Unmute" : "Mute";
    s.muted = muted;
  });
  startBtn.addEventListener("click", start);
  stopBtn.addEventListener("click", stop);
  $("agent-clear").addEventListener("click", clear);
  addEventListener("pagehide", () => ws?.close(1000, "page closed"));
  // For tests and debugging: drop the socket as a network failure would.
  return {
    start,
    stop,
    clear,
    halt: () => (ws || capture ? stop() : undefined),
    drop: () => ws?.close(4000, "test drop"),
  };
}
