// Unit tests of static/js/dsp.js: `node --test static/tests/` (also run by pytest).
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  Framer,
  Resampler,
  base64ToBytes,
  bytesToBase64,
  clampFrameMs,
  decodePcm16,
  designFilter,
  encodePcm16,
  floatToInt16,
  frameSamples,
  levels,
  resampleAll,
} from "../js/dsp.js";

const RATE_PAIRS = [
  [48000, 16000],
  [44100, 16000],
  [48000, 24000],
  [44100, 24000],
  [96000, 16000],
  [22050, 16000],
];

function sine(rate, freq, seconds, amplitude = 0.5, phase = 0) {
  const n = Math.round(rate * seconds);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = amplitude * Math.sin((2 * Math.PI * freq * i) / rate + phase);
  return out;
}

// Least-squares fit of a*cos + b*sin + c at a known frequency; returns the fitted amplitude
// and the residual's power (everything that is not the tone: noise, distortion, aliases).
function fitTone(signal, rate, freq) {
  const w = (2 * Math.PI * freq) / rate;
  let cc = 0;
  let ss = 0;
  let cs = 0;
  let yc = 0;
  let ys = 0;
  for (let i = 0; i < signal.length; i++) {
    const c = Math.cos(w * i);
    const s = Math.sin(w * i);
    cc += c * c;
    ss += s * s;
    cs += c * s;
    yc += signal[i] * c;
    ys += signal[i] * s;
  }
  const det = cc * ss - cs * cs;
  const a = (yc * ss - ys * cs) / det;
  const b = (ys * cc - yc * cs) / det;
  let residual = 0;
  for (let i = 0; i < signal.length; i++) {
    const e = signal[i] - a * Math.cos(w * i) - b * Math.sin(w * i);
    residual += e * e;
  }
  return { amplitude: Math.hypot(a, b), residualPower: residual / signal.length };
}

function rms(x) {
  let s = 0;
  for (const v of x) s += v * v;
  return Math.sqrt(s / x.length);
}

// The steady-state part of a resampled signal: the filter's start-up and tail removed.
function steady(input, inRate, outRate, seconds = 0.5) {
  const r = new Resampler(inRate, outRate);
  const out = r.process(input);
  const edge = Math.ceil((r.taps * outRate) / inRate) + 1;
  return out.subarray(edge, out.length - edge).subarray(0, Math.round(outRate * seconds));
}

const db = (x) => 20 * Math.log10(x);

describe("Resampler frequency response", () => {
  for (const [inRate, outRate] of RATE_PAIRS) {
    test(`${inRate} -> ${outRate}: passband ripple within ±0.1 dB`, () => {
      const { pass } = designFilter(inRate, outRate);
      let worst = 0;
      for (const f of [100, 300, 1000, 2500, 4000, pass * 0.6, pass * 0.9, pass]) {
        const out = steady(sine(inRate, f, 0.7), inRate, outRate);
        const { amplitude } = fitTone(out, outRate, f);
        worst = Math.max(worst, Math.abs(db(amplitude / 0.5)));
      }
      assert.ok(worst < 0.1, `worst passband deviation ${worst.toFixed(4)} dB`);
    });

    test(`${inRate} -> ${outRate}: stopband attenuated by at least 75 dB`, () => {
      const { stop } = designFilter(inRate, outRate);
      if (stop >= inRate / 2) return; // upsampling or equal rates: nothing can fold back
      let worst = -Infinity;
      const top = inRate / 2;
      for (const f of [stop * 1.001, stop * 1.05, stop * 1.3, (stop + top) / 2, top * 0.97]) {
        const out = steady(sine(inRate, f, 0.7), inRate, outRate);
        worst = Math.max(worst, db(rms(out) / (0.5 / Math.SQRT2)));
      }
      assert.ok(worst < -75, `worst stopband leak ${worst.toFixed(1)} dB`);
    });
  }

  test("48000 -> 16000: a 1 kHz sine comes out with SNR above 80 dB", () => {
    const out = steady(sine(48000, 1000, 0.7), 48000, 16000);
    const { amplitude, residualPower } = fitTone(out, 16000, 1000);
    const snr = 10 * Math.log10((amplitude * amplitude) / 2 / residualPower);
    assert.ok(snr > 80, `SNR ${snr.toFixed(1)} dB`);
  });

  test("44100 -> 24000: a 3 kHz sine, after PCM16 encoding, keeps SNR above 70 dB", () => {
    const out = steady(sine(44100, 3000, 0.7, 0.7), 44100, 24000);
    const pcm = decodePcm16(encodePcm16(out));
    const { amplitude, residualPower } = fitTone(pcm, 24000, 3000);
    const snr = 10 * Math.log10((amplitude * amplitude) / 2 / residualPower);
    assert.ok(snr > 70, `SNR ${snr.toFixed(1)} dB`);
  });

  test("a linear interpolator would fail the stopband test (the test can fail)", () => {
    // 12 kHz at 48 kHz aliases to 4 kHz at 16 kHz; naive decimation keeps it at full level.
    const input = sine(48000, 12000, 0.5);
    const naive = new Float32Array(Math.floor(input.length / 3));
    for (let i = 0; i < naive.length; i++) naive[i] = input[i * 3 + 1];
    assert.ok(db(rms(naive) / (0.5 / Math.SQRT2)) > -10);
    const ours = steady(input, 48000, 16000, 0.3);
    assert.ok(db(rms(ours) / (0.5 / Math.SQRT2)) < -75);
  });
});

describe("Resampler streaming", () => {
  test("chunk boundaries are invisible: any chunking gives the same samples", () => {
    const input = sine(44100, 440, 0.4);
    const whole = new Resampler(44100, 16000).process(input);
    const r = new Resampler(44100, 16000);
    const parts = [];
    let i = 0;
    const sizes = [128, 1, 77, 128, 500, 3];
    for (let k = 0; i < input.length; k++) {
      const n = sizes[k % sizes.length];
      parts.push(r.process(input.subarray(i, i + n)));
      i += n;
    }
    const joined = Float32Array.from(parts.flatMap((p) => Array.from(p)));
    assert.equal(joined.length, whole.length);
    for (let j = 0; j < whole.length; j++) assert.ok(Math.abs(joined[j] - whole[j]) < 1e-6);
  });

  test("output count tracks the rate ratio exactly over a long run", () => {
    for (const [inRate, outRate] of RATE_PAIRS) {
      const r = new Resampler(inRate, outRate);
      let produced = 0;
      const quantum = new Float32Array(128);
      const quanta = Math.ceil(inRate / 128) * 3; // ~3 s of render quanta
      for (let q = 0; q < quanta; q++) produced += r.process(quantum).length;
      const expected = (quanta * 128 * outRate) / inRate;
      assert.ok(Math.abs(produced - expected) <= 1, `${inRate}->${outRate}: ${produced} vs ${expected}`);
    }
  });

  test("upsampling 24000 -> 48000 keeps a tone clean", () => {
    const out = steady(sine(24000, 1000, 0.7), 24000, 48000);
    const { amplitude, residualPower } = fitTone(out, 48000, 1000);
    const snr = 10 * Math.log10((amplitude * amplitude) / 2 / residualPower);
    assert.ok(Math.abs(db(amplitude / 0.5)) < 0.1);
    assert.ok(snr > 80, `SNR ${snr.toFixed(1)} dB`);
  });

  test("resampleAll compensates the delay: a click stays where it was", () => {
    const input = new Float32Array(48000);
    input[24000] = 1;
    const out = resampleAll(input, 48000, 16000);
    assert.equal(out.length, 16000);
    let best = 0;
    for (let i = 1; i < out.length; i++) if (Math.abs(out[i]) > Math.abs(out[best])) best = i;
    assert.equal(best, 8000);
  });

  test("flush emits the tail and reset forgets the past", () => {
    const r = new Resampler(48000, 24000);
    const body = r.process(sine(48000, 500, 0.1));
    const tail = r.flush();
    assert.ok(tail.length >= Math.floor(r.taps / 2));
    r.reset();
    const silence = r.process(new Float32Array(4800));
    assert.ok(silence.every((v) => v === 0));
    assert.ok(body.length > 0);
  });
});

describe("PCM16 encoding", () => {
  test("clips beyond full scale and rounds inside it", () => {
    assert.equal(floatToInt16(1), 32767);
    assert.equal(floatToInt16(1.7), 32767);
    assert.equal(floatToInt16(-1), -32768);
    assert.equal(floatToInt16(-3), -32768);
    assert.equal(floatToInt16(0), 0);
    assert.equal(floatToInt16(Number.NaN), 0);
    assert.equal(floatToInt16(0.5), 16384);
    assert.equal(floatToInt16(-0.5), -16384);
  });

  test("bytes are little-endian", () => {
    const bytes = new Uint8Array(encodePcm16(Float32Array.of(1, -1, 256 / 32767)));
    assert.deepEqual(Array.from(bytes), [0xff, 0x7f, 0x00, 0x80, 0x00, 0x01]);
  });

  test("decode(encode(x)) is within half a quantisation step", () => {
    const x = sine(16000, 300, 0.05, 0.9);
    const y = decodePcm16(encodePcm16(x));
    for (let i = 0; i < x.length; i++) assert.ok(Math.abs(x[i] - y[i]) <= 0.5 / 32767 + 1e-7);
  });

  test("base64 round trip", () => {
    const bytes = new Uint8Array(70000).map((_, i) => (i * 31) & 0xff);
    assert.deepEqual(base64ToBytes(bytesToBase64(bytes)), bytes);
  });
});

describe("Framer", () => {
  test("frame length is clamped to 50–1000 ms", () => {
    assert.equal(clampFrameMs(10), 50);
    assert.equal(clampFrameMs(5000), 1000);
    assert.equal(clampFrameMs("abc"), 100);
    assert.equal(clampFrameMs(100), 100);
    assert.equal(frameSamples(16000, 100), 1600);
    assert.equal(frameSamples(24000, 20), 1200);
  });

  test("emits exact frames whatever the input block size", () => {
    for (const [rate, ms] of [
      [16000, 100],
      [24000, 50],
      [16000, 1000],
    ]) {
      const framer = new Framer(rate, ms);
      const frames = [];
      for (let i = 0; i < 1000; i++) frames.push(...framer.push(new Float32Array(43 + (i % 7))));
      const bytes = (rate * ms) / 1000 * 2;
      assert.ok(frames.length > 0);
      for (const f of frames) assert.equal(f.byteLength, bytes);
    }
  });

  test("flush pads the remainder to the minimum frame length", () => {
    const framer = new Framer(16000, 100);
    assert.deepEqual(framer.push(new Float32Array(1700)).length, 1);
    const last = framer.flush();
    assert.equal(last.byteLength, 800 * 2); // 100 samples padded to 50 ms
    assert.equal(framer.flush(), null);
  });

  test("levels", () => {
    const { rms: r, peak } = levels(Float32Array.of(0.5, -0.5, 0.5, -1));
    assert.equal(peak, 1);
    assert.ok(Math.abs(r - Math.sqrt((0.25 * 3 + 1) / 4)) < 1e-9);
  });
});
