// AudioWorkletProcessor: the Voice Agent's reply audio (PCM16 24 kHz) in a ring buffer that
// the audio clock drains; no timers schedule anything. The page posts
//   {type: "audio", pcm: ArrayBuffer}  one reply.audio chunk
//   {type: "end"}                      the reply is complete: play out what is left
//   {type: "flush"}                    barge-in: drop everything not yet played
// and receives {type: "stats", ...} with samples played (at the source rate) and underruns.
import { Resampler, decodePcm16 } from "../dsp.js";

const SOURCE_RATE = 24000;

class PlaybackProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const { prebufferMs = 120, seconds = 60 } = options.processorOptions || {};
    this.ring = new Float32Array(Math.round(sampleRate * seconds));
    this.read = 0;
    this.write = 0;
    this.size = 0;
    this.resampler = new Resampler(SOURCE_RATE, sampleRate);
    // A small jitter buffer before a reply starts: network gaps are absorbed, not heard.
    this.prebuffer = Math.round((sampleRate * prebufferMs) / 1000);
    this.state = "idle"; // idle → buffering → playing → (ending) → idle
    this.ending = false;
    this.stats = {
      received: 0, // source-rate samples received
      played: 0, // output samples played (context rate)
      underruns: 0, // render quanta that ran dry while more audio was expected
      flushed: 0, // output samples dropped by flushes
      flushes: 0,
      replies: 0,
    };
    this.reportEvery = Math.round(sampleRate / 25);
    this.sinceReport = 0;
    this.port.onmessage = (event) => this.onMessage(event.data);
  }

  onMessage(message) {
    if (message.type === "audio") {
      const samples = decodePcm16(message.pcm);
      if (this.state === "idle" || this.ending) {
        // A new reply (possibly while the last one's tail is still playing).
        if (this.state === "idle") this.state = "buffering";
        this.ending = false;
        this.stats.replies += 1;
      }
      this.stats.received += samples.length;
      this.push(this.resampler.process(samples));
    } else if (message.type === "end") {
      this.push(this.resampler.flush());
      this.resampler.reset();
      this.ending = true;
      if (this.state === "buffering") this.state = "playing";
    } else if (message.type === "flush") {
      this.stats.flushed += this.size;
      this.stats.flushes += 1;
      this.read = this.write = this.size = 0;
      this.resampler.reset();
      this.state = "idle";
      this.ending = false;
      this.report();
    }
  }

  push(samples) {
    const ring = this.ring;
    for (let i = 0; i < samples.length; i++) {
      if (this.size === ring.length) break; // full: a minute of backlog is already absurd
      ring[this.write] = samples[i];
      this.write = (this.write + 1) % ring.length;
      this.size += 1;
    }
    if (this.state === "buffering" && this.size >= this.prebuffer) this.state = "playing";
  }

  report() {
    const s = this.stats;
    this.port.postMessage({
      type: "stats",
      receivedSamples: s.received,
      playedFrames: s.played,
      playedSamples: Math.round((s.played * SOURCE_RATE) / sampleRate),
      underruns: s.underruns,
      flushedFrames: s.flushed,
      flushes: s.flushes,
      replies: s.replies,
      buffered: this.size,
      state: this.state,
    });
  }

  process(_inputs, outputs) {
    const out = outputs[0][0];
    if (this.state === "playing") {
      const n = Math.min(out.length, this.size);
      for (let i = 0; i < n; i++) {
        out[i] = this.ring[this.read];
        this.read = (this.read + 1) % this.ring.length;
      }
      this.size -= n;
      this.stats.played += n;
      if (n < out.length) {
        out.fill(0, n);
        if (this.ending) {
          this.state = "idle"; // the reply played out in full
          this.ending = false;
          this.report();
        } else {
          this.stats.underruns += 1; // ran dry mid-reply: re-buffer before going on
          this.state = "buffering";
        }
      }
    } else {
      out.fill(0);
    }
    for (let c = 1; c < outputs[0].length; c++) outputs[0][c].set(out);
    this.sinceReport += out.length;
    if (this.sinceReport >= this.reportEvery) {
      this.sinceReport = 0;
      this.report();
    }
    return true;
  }
}

registerProcessor("aai-playback", PlaybackProcessor);
