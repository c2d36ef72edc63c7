// AudioWorkletProcessor: microphone → target rate → PCM16 LE frames, paced by the audio clock.
// The page receives {type: "frame", pcm: ArrayBuffer} as each frame fills, so frames leave no
// faster than real time, and {type: "level"} about 20 times a second for the meter. With the
// `tap` option it also posts {type: "tap", samples: Float32Array}, the microphone's own
// samples that went into each frame, just before the frame (tests measure the capture's
// fidelity against them).
import { Framer, Resampler, levels } from "../dsp.js";

class CaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const { targetRate = 16000, frameMs = 100, tap = false } = options.processorOptions || {};
    // `sampleRate` is the AudioContext's rate, a global of the worklet scope.
    this.resampler = new Resampler(sampleRate, targetRate);
    this.framer = new Framer(targetRate, frameMs);
    this.sending = true;
    this.levelEvery = Math.round(sampleRate / 20);
    this.sinceLevel = 0;
    this.peak = 0;
    this.sumSquares = 0;
    this.count = 0;
    this.frames = 0;
    this.tap = tap ? [] : null;
    this.port.onmessage = (event) => this.onMessage(event.data);
  }

  onMessage(message) {
    if (message.type === "stop") {
      this.sending = false;
      const last = this.framer.flush();
      if (last) this.post(last);
      this.port.postMessage({ type: "stopped", frames: this.frames });
    } else if (message.type === "pause") {
      this.sending = false;
    } else if (message.type === "resume") {
      this.sending = true;
    }
  }

  post(pcm) {
    this.frames += 1;
    if (this.tap) {
      const samples = new Float32Array(this.tap.reduce((n, block) => n + block.length, 0));
      let at = 0;
      for (const block of this.tap) {
        samples.set(block, at);
        at += block.length;
      }
      this.tap = [];
      this.port.postMessage({ type: "tap", samples }, [samples.buffer]);
    }
    this.port.postMessage({ type: "frame", pcm, at: currentTime }, [pcm]);
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (!channel) return true; // no input connected yet: keep the node alive
    const { rms, peak } = levels(channel);
    this.sumSquares += rms * rms * channel.length;
    this.count += channel.length;
    this.peak = Math.max(this.peak, peak);
    this.sinceLevel += channel.length;
    if (this.sinceLevel >= this.levelEvery) {
      this.port.postMessage({
        type: "level",
        rms: Math.sqrt(this.sumSquares / this.count),
        peak: this.peak,
      });
      this.sinceLevel = 0;
      this.sumSquares = 0;
      this.count = 0;
      this.peak = 0;
    }
    if (this.sending) {
      if (this.tap) this.tap.push(channel.slice());
      for (const frame of this.framer.push(this.resampler.process(channel))) this.post(frame);
    }
    return true;
  }
}

registerProcessor("aai-capture", CaptureProcessor);
