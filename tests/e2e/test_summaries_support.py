"""Helpers for the summaries end-to-end tests."""

from __future__ import annotations

import io
import math
import struct
import wave


def wav_bytes(seconds: float = 6.0, rate: int = 16000) -> bytes:
    """A real mono PCM16 WAV of tone bursts (0.8 s on, 0.5 s off): the emulator's voice
    detector hears each burst as speech, so the transcript has words and paragraphs."""
    frames = int(seconds * rate)
    samples = []
    for i in range(frames):
        t = i / rate
        amplitude = 8000 if (t % 1.3) < 0.8 else 0
        samples.append(int(amplitude * math.sin(2 * math.pi * 220 * t)))
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(struct.pack(f"<{frames}h", *samples))
    return buffer.getvalue()
