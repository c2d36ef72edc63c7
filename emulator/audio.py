"""Audio helpers for the WebSocket halves: chunk timing, G.711, resampling, an energy VAD.

Decoding and the band-limited resampler live in `emulator.recognition`; this module adds
what a live stream needs: the duration of a chunk in its encoding, G.711 encoders for the
Voice Agent's telephony outputs, and `TurnDetector`, an incremental energy VAD that says
where speech starts and where the silence that ends a turn begins.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from emulator.recognition import (
    alaw_to_float,
    float_to_pcm16,
    mulaw_to_float,
    pcm16_to_float,
    resample,
)

# Bytes per sample of each wire encoding (streaming STT and Voice Agent names).
BYTES_PER_SAMPLE: dict[str, int] = {
    "pcm_s16le": 2,
    "pcm_mulaw": 1,
    "audio/pcm": 2,
    "audio/pcmu": 1,
    "audio/pcma": 1,
}

# A frame whose RMS is above this (0.01 of full scale, -40 dBFS) counts as voiced: quiet
# enough for a normal microphone level, well above the hiss of a muted one.
DEFAULT_THRESHOLD = 0.01


def chunk_duration_ms(nbytes: int, sample_rate: int, encoding: str) -> float:
    """How much audio `nbytes` of `encoding` at `sample_rate` carries, in milliseconds."""
    return nbytes / BYTES_PER_SAMPLE[encoding] / sample_rate * 1000.0


def to_pcm16(data: bytes, encoding: str) -> bytes:
    """Wire audio to PCM16 little-endian (G.711 decoded; PCM passed through)."""
    if encoding in ("pcm_mulaw", "audio/pcmu"):
        return float_to_pcm16(mulaw_to_float(data))
    if encoding == "audio/pcma":
        return float_to_pcm16(alaw_to_float(data))
    return data[: len(data) - len(data) % 2]


def pcm16_to_mulaw(pcm16: bytes) -> bytes:
    """PCM16 to G.711 mu-law (the standard segment encoder with the 0x84 bias)."""
    x = np.frombuffer(pcm16[: len(pcm16) - len(pcm16) % 2], dtype="<i2").astype(np.int32)
    sign = np.where(x < 0, 0x80, 0)
    magnitude = np.minimum(np.abs(x), 32635) + 0x84
    exponent = np.floor(np.log2(magnitude)).astype(np.int32) - 7
    exponent = np.clip(exponent, 0, 7)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    encoded = ~(sign | (exponent << 4) | mantissa) & 0xFF
    result: bytes = encoded.astype(np.uint8).tobytes()
    return result


def pcm16_to_alaw(pcm16: bytes) -> bytes:
    """PCM16 to G.711 A-law."""
    x = np.frombuffer(pcm16[: len(pcm16) - len(pcm16) % 2], dtype="<i2").astype(np.int32)
    sign = np.where(x >= 0, 0x80, 0)
    magnitude = np.minimum(np.abs(x), 32767) >> 3  # 13-bit magnitude
    exponent = np.where(
        magnitude < 32, 0, np.floor(np.log2(np.maximum(magnitude, 1))).astype(np.int32) - 4
    )
    exponent = np.clip(exponent, 0, 7)
    mantissa = np.where(exponent == 0, magnitude >> 1, magnitude >> exponent) & 0x0F
    encoded = (sign | (exponent << 4) | mantissa) ^ 0x55
    result: bytes = encoded.astype(np.uint8).tobytes()
    return result


def resample_pcm16(pcm16: bytes, source_rate: int, target_rate: int) -> bytes:
    """PCM16 at one rate to PCM16 at another (band-limited, see recognition.resample)."""
    if source_rate == target_rate:
        return pcm16
    return float_to_pcm16(resample(pcm16_to_float(pcm16), source_rate, target_rate))


def encode_output(pcm16: bytes, rate: int, encoding: str) -> tuple[bytes, int]:
    """PCM16 at `rate` to a Voice Agent output encoding; returns (bytes, their sample rate).

    `audio/pcm` is PCM16 at 24 kHz; `audio/pcmu` and `audio/pcma` are G.711 at 8 kHz.
    """
    if encoding == "audio/pcm":
        return resample_pcm16(pcm16, rate, 24_000), 24_000
    narrow = resample_pcm16(pcm16, rate, 8_000)
    if encoding == "audio/pcmu":
        return pcm16_to_mulaw(narrow), 8_000
    if encoding == "audio/pcma":
        return pcm16_to_alaw(narrow), 8_000
    raise ValueError(f"unknown output encoding {encoding!r}")


def rms(pcm16: bytes) -> float:
    samples = pcm16_to_float(pcm16)
    return float(np.sqrt(np.mean(samples**2))) if samples.size else 0.0


@dataclass(frozen=True)
class TurnEvent:
    """`start`: speech began at `at_ms`; `pause`: the trailing silence reached the pause
    mark; `end`: the silence reached the end mark (the turn's speech ended at `at_ms`)."""

    kind: Literal["start", "pause", "end"]
    at_ms: int


class TurnDetector:
    """An incremental energy VAD over 20 ms frames that finds turns.

    A turn starts after `min_speech_ms` of consecutive voiced frames (its start is the
    first of them); it ends when the silence after the last voiced frame reaches
    `end_silence_ms`. `pause_silence_ms` (shorter) marks a pause inside the turn, where a
    caller may report a partial result. Timestamps are milliseconds of audio since the
    first sample fed, so the result depends only on the audio, never on the wall clock.
    """

    FRAME_MS = 20

    def __init__(
        self,
        sample_rate: int,
        *,
        threshold: float = DEFAULT_THRESHOLD,
        min_speech_ms: int = 60,
        pause_silence_ms: int = 100,
        end_silence_ms: int = 1000,
    ) -> None:
        self.sample_rate = sample_rate
        self.threshold = threshold
        self.min_speech_ms = min_speech_ms
        self.pause_silence_ms = pause_silence_ms
        self.end_silence_ms = end_silence_ms
        self._frame = max(1, sample_rate * self.FRAME_MS // 1000)
        self._pending = np.zeros(0, dtype=np.float64)
        self.frames = 0  # frames analysed so far
        self.in_turn = False
        self.turn_start_ms = 0
        self.last_voice_end_ms = 0
        self._voiced_run = 0
        self._silence_run = 0
        self._paused = False

    @property
    def position_ms(self) -> int:
        return self.frames * self.FRAME_MS

    @property
    def trailing_silence_ms(self) -> int:
        return self._silence_run * self.FRAME_MS if self.in_turn else 0

    def feed(self, pcm16: bytes) -> list[TurnEvent]:
        samples = pcm16_to_float(pcm16)
        if self._pending.size:
            samples = np.concatenate([self._pending, samples])
        count = samples.size // self._frame
        self._pending = samples[count * self._frame :]
        if count == 0:
            return []
        frames = samples[: count * self._frame].reshape(count, self._frame)
        voiced = np.sqrt(np.mean(frames**2, axis=1)) > self.threshold
        events: list[TurnEvent] = []
        min_run = max(1, -(-self.min_speech_ms // self.FRAME_MS))
        for is_voiced in voiced:
            self.frames += 1
            if is_voiced:
                self._voiced_run += 1
                self._silence_run = 0
                self._paused = False
                self.last_voice_end_ms = self.position_ms
                if not self.in_turn and self._voiced_run >= min_run:
                    self.in_turn = True
                    self.turn_start_ms = self.position_ms - self._voiced_run * self.FRAME_MS
                    events.append(TurnEvent("start", self.turn_start_ms))
                continue
            self._voiced_run = 0
            if not self.in_turn:
                continue
            self._silence_run += 1
            silence = self._silence_run * self.FRAME_MS
            if silence >= self.end_silence_ms:
                events.append(TurnEvent("end", self.last_voice_end_ms))
                self._reset_turn()
            elif silence >= self.pause_silence_ms and not self._paused:
                self._paused = True
                events.append(TurnEvent("pause", self.last_voice_end_ms))
        return events

    def force_end(self) -> TurnEvent | None:
        """End the current turn now (ForceEndpoint, Terminate); None when not in a turn."""
        if not self.in_turn:
            return None
        event = TurnEvent("end", self.last_voice_end_ms)
        self._reset_turn()
        return event

    def _reset_turn(self) -> None:
        self.in_turn = False
        self._silence_run = 0
        self._voiced_run = 0
        self._paused = False
