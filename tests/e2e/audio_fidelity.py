"""Measuring captured audio against a reference: alignment by cross-correlation (to a
fraction of a sample) and the signal-to-noise ratio of what is left.

Used by the browser tests and `bench/capture_fidelity.py`. They measure what the page sent
against what its microphone delivered (the capture worklet's tap), resampled by sox: the
fake microphone's own glitches on a loaded machine (Chromium repeats or drops 10 ms device
buffers when its audio thread is starved) are then in both, and what is measured is the
page's resampling, framing and transport alone.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

Float = NDArray[np.float64]

# Sentences separated by more silence than the emulator's end-of-turn silence (1.28 s), so
# each one becomes a final turn, with time left for a reply before the next one starts; the
# fake microphone loops the whole file.
SPEECH_SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Please call Stella and ask her to bring these things from the store.",
)
GAP_S = 3.0


def read_wav(path: Path) -> tuple[int, Float]:
    with wave.open(str(path), "rb") as w:
        assert w.getsampwidth() == 2, f"{path}: want 16-bit samples"
        assert w.getnchannels() == 1, f"{path}: want mono"
        rate = w.getframerate()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return rate, data.astype(np.float64) / 32768.0


def make_speech(directory: Path, sentences: tuple[str, ...] = SPEECH_SENTENCES) -> dict[str, Path]:
    """espeak-ng speech, resampled by sox to 48 kHz (the fake microphone) and to the targets."""
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not installed")
    directory.mkdir(parents=True, exist_ok=True)
    parts: list[str] = []
    for i, sentence in enumerate(sentences):
        part = directory / f"sentence-{i}.wav"
        subprocess.run(
            ["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(part), sentence], check=True
        )
        padded = directory / f"sentence-{i}-padded.wav"
        subprocess.run(["sox", str(part), str(padded), "pad", "0", str(GAP_S)], check=True)
        parts.append(str(padded))
    raw = directory / "speech-raw.wav"
    subprocess.run(["sox", *parts, str(raw)], check=True)
    out = {}
    for rate in (48000, 24000, 16000):
        path = directory / f"speech-{rate}.wav"
        # -v: sox's very-high-quality rate conversion, the reference we measure against.
        subprocess.run(
            ["sox", str(raw), "-r", str(rate), "-c", "1", "-b", "16", str(path), "rate", "-v"],
            check=True,
        )
        out[str(rate)] = path
    return out


def _fractional_shift(x: Float, shift: float) -> Float:
    """x delayed by `shift` samples (band-limited: a linear phase in the frequency domain)."""
    n = len(x)
    size = 1 << (n - 1).bit_length()
    spectrum = np.fft.rfft(x, size)
    freqs = np.fft.rfftfreq(size)
    return np.fft.irfft(spectrum * np.exp(-2j * np.pi * freqs * shift), size)[:n]


@dataclass
class Fidelity:
    snr_db: float
    gain: float  # captured level / reference level
    lag_samples: float
    compared_s: float


def snr_against(captured: Float, reference: Float, rate: int, skip_s: float = 0.3) -> Fidelity:
    """Align `captured` with `reference` (which the capture may have looped through) and
    measure the SNR of the capture against it, at unit gain."""
    captured = captured[int(skip_s * rate) :]  # the capture's first instants: filter start-up
    if len(captured) < rate // 2:
        raise ValueError("less than half a second of captured audio")
    # The fake microphone loops the file: search a doubled reference.
    looped = np.concatenate([reference, reference, reference])
    size = 1 << (len(looped) + len(captured)).bit_length()
    corr = np.fft.irfft(np.fft.rfft(looped, size) * np.conj(np.fft.rfft(captured, size)), size)
    corr = corr[: len(looped) - len(captured) + 1]
    k = int(np.argmax(corr))
    # Parabolic interpolation of the peak: the lag to a fraction of a sample.
    frac = 0.0
    if 0 < k < len(corr) - 1:
        a, b, c = corr[k - 1], corr[k], corr[k + 1]
        denom = a - 2 * b + c
        if denom != 0:
            frac = 0.5 * (a - c) / denom
    start = k
    segment = looped[start : start + len(captured) + 64]
    aligned = _fractional_shift(segment, -frac)[: len(captured)]

    # Refine the fraction by a few golden-section steps on the residual.
    def residual(f: float) -> float:
        ref = _fractional_shift(segment, -f)[: len(captured)]
        return float(np.sum((captured - ref) ** 2))

    lo, hi = frac - 0.5, frac + 0.5
    phi = (np.sqrt(5) - 1) / 2
    for _ in range(30):
        m1, m2 = hi - phi * (hi - lo), lo + phi * (hi - lo)
        if residual(m1) < residual(m2):
            hi = m2
        else:
            lo = m1
    frac = (lo + hi) / 2
    aligned = _fractional_shift(segment, -frac)[: len(captured)]
    # Compare where the reference has signal; edges of the FFT shift are excluded.
    edge = 64
    ref = aligned[edge:-edge]
    cap = captured[edge:-edge]
    noise = float(np.sum((cap - ref) ** 2))
    power = float(np.sum(ref**2))
    gain = float(np.sqrt(np.sum(cap**2) / power)) if power else 0.0
    snr = 10 * np.log10(power / noise) if noise > 0 else float("inf")
    return Fidelity(
        snr_db=float(snr), gain=gain, lag_samples=start + frac, compared_s=len(cap) / rate
    )


def pcm16_to_float(data: bytes) -> Float:
    return np.frombuffer(data, dtype="<i2").astype(np.float64) / 32768.0


# The page's tapped microphone samples (Float32, the context's rate), read in one piece.
READ_TAP_JS = """(path) => {
  const blocks = path.split(".").reduce((o, k) => o[k], window.__aaiStats);
  const all = new Float32Array(blocks.reduce((n, b) => n + b.length, 0));
  let at = 0;
  for (const b of blocks) { all.set(b, at); at += b.length; }
  const bytes = new Uint8Array(all.buffer);
  let text = "";
  for (let i = 0; i < bytes.length; i += 32768) {
    text += String.fromCharCode.apply(null, bytes.subarray(i, i + 32768));
  }
  return btoa(text);
}"""


def read_tap(page: Any, path: str = "stt.tap") -> Float:
    """What the page's microphone delivered to the capture worklet (window.__aaiTap set)."""
    data = base64.b64decode(page.evaluate(READ_TAP_JS, path))
    return np.frombuffer(data, dtype="<f4").astype(np.float64)


def resample(samples: Float, in_rate: int, out_rate: int) -> Float:
    """`samples` at `out_rate`, by sox's very-high-quality converter (`rate -v`), in floats."""
    raw = ["-t", "raw", "-e", "floating-point", "-b", "32", "-c", "1", "-L"]
    out = subprocess.run(
        ["sox", *raw, "-r", str(in_rate), "-", *raw, "-r", str(out_rate), "-", "rate", "-v"],
        input=samples.astype("<f4").tobytes(),
        capture_output=True,
        check=True,
    ).stdout
    return np.frombuffer(out, dtype="<f4").astype(np.float64)
