// The worklet processors driven by hand in node: AudioWorkletGlobalScope's few globals are
// stubbed, `process()` is called like the audio thread would, one 128-frame quantum at a time.
import assert from "node:assert/strict";
import { before, describe, test } from "node:test";

import { encodePcm16 } from "../js/dsp.js";

const processors = {};
before(async () => {
  globalThis.sampleRate = 48000;
  globalThis.currentTime = 0;
  globalThis.AudioWorkletProcessor = class {
    constructor() {
      this.port = { sent: [], postMessage: (m) => this.port.sent.push(m) };
    }
  };
  globalThis.registerProcessor = (name, cls) => {
    processors[name] = cls;
  };
  await import("../js/worklets/playback.js");
  await import("../js/worklets/capture.js");
});

function playback(options = {}) {
  return new processors["aai-playback"]({ processorOptions: { prebufferMs: 100, ...options } });
}

function render(proc, quanta) {
  const out = [];
  for (let i = 0; i < quanta; i++) {
    const channel = new Float32Array(128);
    proc.process([], [[channel]]);
    out.push(channel);
  }
  return out;
}

function tone(seconds, rate = 24000) {
  const x = new Float32Array(Math.round(rate * seconds));
  for (let i = 0; i < x.length; i++) x[i] = 0.5 * Math.sin((2 * Math.PI * 440 * i) / rate);
  return x;
}

function send(proc, message) {
  proc.port.onmessage({ data: message });
}

describe("playback worklet", () => {
  test("a reply plays in full after the jitter buffer, with no underrun", () => {
    const p = playback();
    send(p, { type: "audio", pcm: encodePcm16(tone(0.05)) }); // 50 ms < 100 ms prebuffer
    assert.ok(render(p, 10).every((q) => q.every((v) => v === 0)), "silent while buffering");
    send(p, { type: "audio", pcm: encodePcm16(tone(0.45)) });
    send(p, { type: "end" });
    render(p, 400); // 1 s
    assert.equal(p.state, "idle");
    assert.equal(p.stats.underruns, 0);
    assert.equal(p.stats.received, 12000);
    // Every input sample came out (at 2x the rate), plus the filter's tail.
    assert.ok(p.stats.played >= 24000, `played ${p.stats.played}`);
  });

  test("running dry mid-reply counts an underrun and re-buffers", () => {
    const p = playback();
    send(p, { type: "audio", pcm: encodePcm16(tone(0.2)) });
    render(p, 200); // far longer than the audio: the reply has not ended
    assert.equal(p.stats.underruns, 1);
    assert.equal(p.state, "buffering");
  });

  test("flush drops what is buffered at once", () => {
    const p = playback();
    send(p, { type: "audio", pcm: encodePcm16(tone(1)) });
    render(p, 10);
    send(p, { type: "flush" });
    assert.equal(p.size, 0);
    assert.equal(p.stats.flushes, 1);
    assert.ok(p.stats.flushed > 40000);
    assert.ok(render(p, 5).every((q) => q.every((v) => v === 0)));
  });
});

describe("capture worklet", () => {
  test("48 kHz in, exact 100 ms PCM16 frames at 16 kHz out, level reports", () => {
    const c = new processors["aai-capture"]({ processorOptions: { targetRate: 16000, frameMs: 100 } });
    const quantum = new Float32Array(128).fill(0.25);
    for (let i = 0; i < 375; i++) c.process([[quantum]]); // 1 s at 48 kHz
    const frames = c.port.sent.filter((m) => m.type === "frame");
    assert.ok(frames.length >= 9 && frames.length <= 10, `${frames.length} frames`);
    for (const f of frames) assert.equal(f.pcm.byteLength, 3200);
    assert.ok(c.port.sent.some((m) => m.type === "level" && m.rms > 0.2));
    send(c, { type: "stop" });
    const last = c.port.sent.filter((m) => m.type === "frame").at(-1);
    assert.ok(last.pcm.byteLength >= 1600, "the tail is padded to at least 50 ms");
    assert.equal(c.port.sent.at(-1).type, "stopped");
  });

  test("the tap hands over exactly the samples that went into each frame, before it", () => {
    const c = new processors["aai-capture"]({
      processorOptions: { targetRate: 16000, frameMs: 100, tap: true },
    });
    const input = [];
    for (let i = 0; i < 400; i++) {
      const quantum = new Float32Array(128).map((_, j) => Math.sin((i * 128 + j) / 7));
      input.push(...quantum);
      c.process([[quantum]]);
      quantum.fill(9); // the audio thread reuses its buffers: the tap must have copied
    }
    send(c, { type: "stop" });
    const sent = c.port.sent.filter((m) => m.type === "tap" || m.type === "frame");
    // Strictly alternating, a tap first.
    sent.forEach((m, i) => assert.equal(m.type, i % 2 ? "frame" : "tap"));
    const tapped = sent.filter((m) => m.type === "tap").flatMap((m) => [...m.samples]);
    assert.equal(tapped.length, input.length);
    assert.deepEqual(tapped, input.map((x) => Math.fround(x)));
    // Without the option, nothing is tapped.
    const plain = new processors["aai-capture"]({ processorOptions: { targetRate: 16000 } });
    plain.process([[new Float32Array(128)]]);
    assert.ok(!plain.port.sent.some((m) => m.type === "tap"));
  });
});
