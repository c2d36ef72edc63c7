// The microphone graph (getUserMedia → capture worklet) and the playback graph (playback
// worklet → speakers). Everything runs on the AudioContext's clock.
import { clampFrameMs, meterValue } from "./dsp.js";

const CAPTURE_URL = new URL("./worklets/capture.js", import.meta.url);
const PLAYBACK_URL = new URL("./worklets/playback.js", import.meta.url);

/** Audio processing switches for getUserMedia; all off by default (raw speech is best). */
export function readProcessing(root) {
  return {
    echoCancellation: root.querySelector(".opt-ec")?.checked ?? false,
    noiseSuppression: root.querySelector(".opt-ns")?.checked ?? false,
    autoGainControl: root.querySelector(".opt-agc")?.checked ?? false,
  };
}

let sharedContext = null;

/**
 * One AudioContext for the page, created and resumed inside a user gesture (mobile Safari
 * starts contexts suspended and only resumes them from a click or tap).
 */
export async function audioContext() {
  if (!sharedContext || sharedContext.state === "closed") {
    sharedContext = new AudioContext({ latencyHint: "interactive" });
  }
  if (sharedContext.state !== "running") await sharedContext.resume();
  return sharedContext;
}

/**
 * Call first thing in a click handler, before any await: creating and resuming the context
 * inside the gesture is what mobile Safari requires; later awaits then find it running.
 */
export function unlockAudio() {
  if (!sharedContext || sharedContext.state === "closed") {
    sharedContext = new AudioContext({ latencyHint: "interactive" });
  }
  if (sharedContext.state !== "running") sharedContext.resume().catch(() => {});
}

/** The level meter: the bar's width, and the value a screen reader reads (role="meter"). */
function showLevel(bar, level) {
  const percent = Math.round(level * 100);
  bar.style.width = `${level * 100}%`;
  const meter = bar.parentElement;
  if (meter && meter.getAttribute("aria-valuenow") !== String(percent)) {
    meter.setAttribute("aria-valuenow", String(percent));
  }
}

// --- Microphone picker: every <select class="mic-select"> lists the audio inputs ---------
const MIC_PREFERENCE = "aai-proxy:microphone";

export function preferredMicrophone() {
  try {
    return localStorage.getItem(MIC_PREFERENCE) || "";
  } catch {
    return "";
  }
}

/** Fill the pickers from enumerateDevices (labels are blank until access is granted). */
export async function refreshMicrophones() {
  const selects = [...document.querySelectorAll("select.mic-select")];
  if (!selects.length || !navigator.mediaDevices?.enumerateDevices) return [];
  let devices = [];
  try {
    devices = (await navigator.mediaDevices.enumerateDevices()).filter((d) => d.kind === "audioinput");
  } catch {
    return [];
  }
  const chosen = preferredMicrophone();
  const real = devices.filter((d) => d.deviceId && d.deviceId !== "default");
  for (const select of selects) {
    const options = [new Option("Default microphone", "")];
    real.forEach((d, i) => options.push(new Option(d.label || `Microphone ${i + 1}`, d.deviceId)));
    select.replaceChildren(...options);
    select.value = real.some((d) => d.deviceId === chosen) ? chosen : "";
  }
  return real;
}

/** Wire the pickers once: a choice is remembered and shown in every view. */
export function mountMicrophonePickers() {
  for (const select of document.querySelectorAll("select.mic-select")) {
    select.addEventListener("change", () => {
      try {
        localStorage.setItem(MIC_PREFERENCE, select.value);
      } catch {
        // private mode: the choice lasts for this page only
      }
      for (const other of document.querySelectorAll("select.mic-select")) other.value = select.value;
    });
  }
  navigator.mediaDevices?.addEventListener?.("devicechange", () => refreshMicrophones());
  return refreshMicrophones();
}

const loaded = new WeakMap();
async function ensureModule(ctx, url) {
  let modules = loaded.get(ctx);
  if (!modules) loaded.set(ctx, (modules = new Map()));
  if (!modules.has(url.href)) modules.set(url.href, ctx.audioWorklet.addModule(url));
  await modules.get(url.href);
}

/**
 * Start the microphone at `targetRate`, calling `onFrame(ArrayBuffer)` with each PCM16 LE
 * frame of `frameMs` as the audio clock produces it. `meter` is an element whose width
 * shows the input level. `onTap(Float32Array)`, when given, receives the microphone's own
 * samples (at the context's rate) that went into each frame, just before it.
 */
export async function startCapture({
  targetRate,
  frameMs = 100,
  processing,
  onFrame,
  onTap,
  meter,
  deviceId = "",
}) {
  const ctx = await audioContext();
  const audio = { channelCount: 1, ...processing };
  if (deviceId) audio.deviceId = { exact: deviceId };
  const stream = await navigator.mediaDevices.getUserMedia({ audio, video: false });
  refreshMicrophones(); // labels are readable once access is granted
  await ensureModule(ctx, CAPTURE_URL);
  const source = ctx.createMediaStreamSource(stream);
  const node = new AudioWorkletNode(ctx, "aai-capture", {
    numberOfInputs: 1,
    numberOfOutputs: 0,
    channelCount: 1,
    channelCountMode: "explicit",
    channelInterpretation: "speakers",
    processorOptions: { targetRate, frameMs: clampFrameMs(frameMs), tap: Boolean(onTap) },
  });
  let stoppedResolve;
  const stopped = new Promise((resolve) => (stoppedResolve = resolve));
  node.port.onmessage = ({ data }) => {
    if (data.type === "frame") onFrame(data.pcm);
    else if (data.type === "tap") onTap(data.samples);
    else if (data.type === "level" && meter) showLevel(meter, meterValue(data.rms));
    else if (data.type === "stopped") stoppedResolve(data.frames);
  };
  source.connect(node);

  return {
    contextRate: ctx.sampleRate,
    /** Stop capturing; the last partial frame (padded to 50 ms) is delivered first. */
    async stop() {
      node.port.postMessage({ type: "stop" });
      await Promise.race([stopped, new Promise((r) => setTimeout(r, 500))]);
      source.disconnect();
      node.disconnect();
      for (const track of stream.getTracks()) track.stop();
      if (meter) showLevel(meter, 0);
    },
  };
}

/** The Voice Agent's speaker: a ring buffer in a worklet, drained by the audio clock. */
export async function startPlayback({ onStats }) {
  const ctx = await audioContext();
  await ensureModule(ctx, PLAYBACK_URL);
  const node = new AudioWorkletNode(ctx, "aai-playback", {
    numberOfInputs: 0,
    numberOfOutputs: 1,
    outputChannelCount: [1],
    processorOptions: { prebufferMs: 200 },
  });
  node.connect(ctx.destination);
  node.port.onmessage = ({ data }) => {
    if (data.type === "stats" && onStats) onStats(data);
  };
  return {
    push(pcm) {
      node.port.postMessage({ type: "audio", pcm }, [pcm]);
    },
    end() {
      node.port.postMessage({ type: "end" });
    },
    flush() {
      node.port.postMessage({ type: "flush" });
    },
    stop() {
      node.disconnect();
    },
  };
}
