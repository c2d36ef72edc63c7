// Pure audio helpers shared by the AudioWorklet processors, the page and the node tests.
// No DOM, no Web Audio: everything here is plain arithmetic on typed arrays.

export const MIN_FRAME_MS = 50;
export const MAX_FRAME_MS = 1000;
export const DEFAULT_FRAME_MS = 100;

// Phase tables beyond this many phases cost memory for no audible gain: a rate pair whose
// exact ratio needs more phases (co-prime rates) rounds each output instant to the nearest
// of MAX_PHASES sub-sample positions (a timing error below 1/8000 of an input sample).
const MAX_PHASES = 4096;

function gcd(a, b) {
  while (b) [a, b] = [b, a % b];
  return a;
}

// Zeroth-order modified Bessel function of the first kind (series), for the Kaiser window.
export function besselI0(x) {
  let sum = 1;
  let term = 1;
  const q = (x * x) / 4;
  for (let k = 1; k < 64; k++) {
    term *= q / (k * k);
    sum += term;
    if (term < sum * 1e-17) break;
  }
  return sum;
}

// Kaiser's formulas: beta for a stopband attenuation, taps for a transition width.
export function kaiserBeta(attenuationDb) {
  if (attenuationDb > 50) return 0.1102 * (attenuationDb - 8.7);
  if (attenuationDb >= 21) {
    return 0.5842 * (attenuationDb - 21) ** 0.4 + 0.07886 * (attenuationDb - 21);
  }
  return 0;
}

function sinc(x) {
  if (x === 0) return 1;
  const px = Math.PI * x;
  return Math.sin(px) / px;
}

/**
 * Filter design shared by every rate pair: passband up to `passband` × the lower Nyquist
 * frequency, stopband from the lower Nyquist frequency on (so nothing folds back), with
 * `attenuationDb` of rejection. Returns the numbers in input-sample units.
 */
export function designFilter(inRate, outRate, { passband = 0.94, attenuationDb = 85 } = {}) {
  const nyquist = Math.min(inRate, outRate) / 2;
  const pass = passband * nyquist;
  const stop = nyquist;
  const cutoff = (pass + stop) / 2 / inRate; // cycles per input sample, the -6 dB point
  const transition = (stop - pass) / inRate;
  const beta = kaiserBeta(attenuationDb);
  let taps = Math.ceil((attenuationDb - 7.95) / (2.285 * 2 * Math.PI * transition)) + 1;
  taps += taps % 2; // even: the kernel's centre falls between two input samples at phase 0
  return { cutoff, beta, taps, pass, stop, nyquist };
}

/**
 * A streaming polyphase windowed-sinc (Kaiser) resampler from `inRate` to `outRate`.
 * `process(Float32Array)` returns every output sample that the input so far determines; the
 * state between calls makes chunk boundaries invisible. `flush()` pushes the filter's tail.
 */
export class Resampler {
  constructor(inRate, outRate, options = {}) {
    if (!(inRate > 0 && outRate > 0)) throw new RangeError("sample rates must be positive");
    const a = Math.round(inRate);
    const b = Math.round(outRate);
    const g = gcd(a, b);
    this.inRate = a;
    this.outRate = b;
    this.L = b / g; // output instants per input sample, in exact integer units
    this.M = a / g;
    const design = designFilter(a, b, options);
    this.design = design;
    this.taps = design.taps;
    this.phases = Math.min(this.L, MAX_PHASES);
    this.table = this.#buildTable(design);
    // History of the last (taps - 1) inputs, then the new ones.
    this.buf = new Float32Array(this.taps - 1 + 4096);
    this.len = this.taps - 1;
    // Position of the next output, in units of 1/L input samples from buf[0].
    this.pos = (this.taps - 1) * this.L;
    // Input samples between an input and the output that mirrors it (group delay).
    this.delay = this.taps / 2;
  }

  #buildTable({ cutoff, beta, taps }) {
    const P = this.phases;
    const table = new Float32Array(P * taps);
    const i0b = besselI0(beta);
    const centre = taps / 2;
    for (let p = 0; p < P; p++) {
      const frac = p / P;
      let sum = 0;
      const row = new Float64Array(taps);
      for (let j = 0; j < taps; j++) {
        // Distance, in input samples, between tap j's input and the output instant.
        const u = j + frac;
        const r = (2 * u) / taps - 1;
        const w = Math.abs(r) >= 1 ? 0 : besselI0(beta * Math.sqrt(1 - r * r)) / i0b;
        const h = 2 * cutoff * sinc(2 * cutoff * (u - centre)) * w;
        row[j] = h;
        sum += h;
      }
      // Unit DC gain in every phase: no phase-dependent gain ripple.
      for (let j = 0; j < taps; j++) table[p * taps + j] = row[j] / sum;
    }
    return table;
  }

  /** The number of outputs `process` would return for `n` more inputs. */
  outputsFor(n) {
    const end = (this.len + n) * this.L;
    if (this.pos >= end) return 0;
    return Math.ceil((end - this.pos) / this.M);
  }

  process(input) {
    const need = this.len + input.length;
    if (need > this.buf.length) {
      const grown = new Float32Array(Math.max(need, this.buf.length * 2));
      grown.set(this.buf.subarray(0, this.len));
      this.buf = grown;
    }
    this.buf.set(input, this.len);
    this.len = need;

    const out = new Float32Array(this.outputsFor(0));
    const { L, M, taps, table, buf, phases } = this;
    let pos = this.pos;
    let n = 0;
    const end = this.len * L;
    while (pos < end) {
      let i = Math.floor(pos / L);
      let p = pos - i * L;
      if (phases !== L) {
        p = Math.round((p * phases) / L);
        if (p === phases) {
          p = 0;
          i += 1;
          if (i >= this.len) break;
        }
      }
      // y = sum_j x[i - j] * h_p[j]
      const row = p * taps;
      let acc = 0;
      for (let j = 0; j < taps; j++) acc += buf[i - j] * table[row + j];
      out[n++] = acc;
      pos += M;
    }
    // Keep only the history the next outputs need.
    const keep = taps - 1;
    const shift = this.len - keep;
    if (shift > 0) {
      buf.copyWithin(0, shift, this.len);
      this.len = keep;
      pos -= shift * L;
    }
    this.pos = pos;
    return n === out.length ? out : out.subarray(0, n);
  }

  /** Push zeros through so the last real inputs come out (the filter's delay). */
  flush() {
    return this.process(new Float32Array(this.taps));
  }

  reset() {
    this.buf.fill(0);
    this.len = this.taps - 1;
    this.pos = (this.taps - 1) * this.L;
  }
}

/** Resample a whole signal at once, compensating the filter delay (for tests and tools). */
export function resampleAll(input, inRate, outRate, options) {
  const r = new Resampler(inRate, outRate, options);
  const body = r.process(input);
  const tail = r.flush();
  const all = new Float32Array(body.length + tail.length);
  all.set(body);
  all.set(tail, body.length);
  const skip = Math.round((r.delay * outRate) / inRate);
  const want = Math.round((input.length * outRate) / inRate);
  return all.subarray(skip, skip + want);
}

/** One float sample in [-1, 1] to a signed 16-bit integer, clipping anything beyond. */
export function floatToInt16(x) {
  if (!(x > -1)) return x !== x ? 0 : -32768; // also maps NaN to silence
  if (x >= 1) return 32767;
  return x < 0 ? Math.round(x * 32768) : Math.round(x * 32767);
}

/** Float32 samples to PCM16 little-endian bytes, clipped, whatever the host's byte order. */
export function encodePcm16(samples) {
  const bytes = new ArrayBuffer(samples.length * 2);
  const view = new DataView(bytes);
  for (let i = 0; i < samples.length; i++) view.setInt16(i * 2, floatToInt16(samples[i]), true);
  return bytes;
}

/** PCM16 little-endian bytes to Float32 samples in [-1, 1] (the inverse of the encoder). */
export function decodePcm16(buffer) {
  const bytes = buffer instanceof ArrayBuffer ? buffer : buffer.buffer;
  const offset = buffer instanceof ArrayBuffer ? 0 : buffer.byteOffset;
  const length = buffer.byteLength >> 1;
  const view = new DataView(bytes, offset, length * 2);
  const out = new Float32Array(length);
  for (let i = 0; i < length; i++) {
    const v = view.getInt16(i * 2, true);
    out[i] = v < 0 ? v / 32768 : v / 32767;
  }
  return out;
}

/** Frame length in milliseconds, kept within the 50–1000 ms that streaming STT accepts. */
export function clampFrameMs(ms) {
  const value = Number(ms);
  if (!Number.isFinite(value)) return DEFAULT_FRAME_MS;
  return Math.min(MAX_FRAME_MS, Math.max(MIN_FRAME_MS, Math.round(value)));
}

export function frameSamples(rate, ms) {
  return Math.round((rate * clampFrameMs(ms)) / 1000);
}

/**
 * Collects samples into frames of exactly `frameMs` at `rate` and hands each out as PCM16 LE
 * bytes. `flush()` returns the remainder padded with silence to at least the minimum frame
 * length, so even the last frame is one the server accepts.
 */
export class Framer {
  constructor(rate, frameMs = DEFAULT_FRAME_MS) {
    this.rate = rate;
    this.frameMs = clampFrameMs(frameMs);
    this.size = frameSamples(rate, this.frameMs);
    this.pending = new Float32Array(this.size);
    this.fill = 0;
  }

  push(samples) {
    const frames = [];
    let offset = 0;
    while (offset < samples.length) {
      const take = Math.min(this.size - this.fill, samples.length - offset);
      this.pending.set(samples.subarray(offset, offset + take), this.fill);
      this.fill += take;
      offset += take;
      if (this.fill === this.size) {
        frames.push(encodePcm16(this.pending));
        this.fill = 0;
      }
    }
    return frames;
  }

  flush() {
    if (this.fill === 0) return null;
    const min = frameSamples(this.rate, MIN_FRAME_MS);
    const last = new Float32Array(Math.max(min, this.fill));
    last.set(this.pending.subarray(0, this.fill));
    this.fill = 0;
    return encodePcm16(last);
  }
}

/** Root-mean-square and peak of a block, for the level meter. */
export function levels(samples) {
  let sum = 0;
  let peak = 0;
  for (let i = 0; i < samples.length; i++) {
    const s = samples[i];
    sum += s * s;
    const a = Math.abs(s);
    if (a > peak) peak = a;
  }
  return { rms: samples.length ? Math.sqrt(sum / samples.length) : 0, peak };
}

/** Level in dBFS mapped to 0..1 for a meter (−60 dBFS and below is empty). */
export function meterValue(rms) {
  if (rms <= 0) return 0;
  const db = 20 * Math.log10(rms);
  return Math.min(1, Math.max(0, (db + 60) / 60));
}

// base64 for the Voice Agent's JSON audio events, in chunks so large buffers don't overflow
// the argument list of String.fromCharCode.
export function bytesToBase64(buffer) {
  const bytes = buffer instanceof Uint8Array ? buffer : new Uint8Array(buffer);
  let binary = "";
  const CHUNK = 0x8000;
  for (let i = 0; i < bytes.length; i += CHUNK) {
    binary += String.fromCharCode.apply(null, bytes.subarray(i, i + CHUNK));
  }
  return btoa(binary);
}

export function base64ToBytes(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}
