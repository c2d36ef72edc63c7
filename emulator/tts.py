"""The Voice Agent's speech: the voice catalogue and text-to-speech for its replies.

Replies are real, audible speech: espeak-ng (run as a subprocess, so the event loop never
blocks) with a variant and pitch per catalogue voice, resampled to 24 kHz. Without
espeak-ng (or with `EMULATOR_TTS=synth`) a voiced buzz with one syllable-shaped burst per
vowel group stands in: not words, but speech-like energy that a VAD and a speaker accept.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import struct
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from emulator.audio import resample_pcm16
from emulator.recognition import float_to_pcm16

logger = logging.getLogger(__name__)

OUTPUT_RATE = 24_000


@dataclass(frozen=True)
class Voice:
    id: str
    language: str  # the catalogue's group
    description: str
    espeak: str  # espeak-ng voice+variant
    pitch: int  # espeak-ng pitch, 0-99
    speed: int  # espeak-ng words per minute

    def public(self) -> dict[str, str]:
        return {"voice_id": self.id, "language": self.language, "description": self.description}


def _v(id_: str, language: str, description: str, espeak: str, pitch: int, speed: int) -> Voice:
    return Voice(id_, language, description, espeak, pitch, speed)


US, UK, MULTI = "English (US)", "English (UK)", "Multilingual"

# The reference's catalogue (section 10), in its order. Default: ivy.
VOICES: dict[str, Voice] = {
    v.id: v
    for v in (
        _v("ivy", US, "professional, deliberate, smooth", "en-us+f3", 55, 160),
        _v("james", US, "conversational, professional", "en-us+m3", 45, 170),
        _v("tyler", US, "theatrical, energetic, chatty", "en-us+m1", 60, 190),
        _v("winter", US, "empathetic, conversational", "en-us+f2", 55, 165),
        _v("sam", US, "soft, conversational, young", "en-us+f4", 60, 165),
        _v("mia", US, "smooth, conversational, young", "en-us+f1", 62, 170),
        _v("bella", US, "high-pitched, chatty", "en-us+f5", 80, 185),
        _v("david", US, "deep, calming, conversational", "en-us+m2", 25, 150),
        _v("jack", US, "smooth, direct, fast-paced", "en-us+m4", 45, 200),
        _v("kyle", US, "chatty, nasal, expressive", "en-us+m5", 55, 185),
        _v("helen", US, "soft, older, calming", "en-us+f2", 40, 145),
        _v("martha", US, "southern, older, warm", "en-us+f3", 42, 150),
        _v("river", US, "slow, calming, ASMR", "en-us+f4", 45, 125),
        _v("emma", US, "lively, young, conversational", "en-us+f1", 70, 180),
        _v("victor", US, "deep, older", "en-us+m6", 20, 150),
        _v("eleanor", US, "deeper, older, calming", "en-us+f2", 30, 145),
        _v("sophie", UK, "clear, smooth, instructive", "en-gb+f3", 55, 160),
        _v("oliver", UK, "narrative, conversational", "en-gb+m3", 45, 165),
        _v("arjun", MULTI, "Hindi/Hinglish and English", "en-us+m3", 48, 170),
        _v("ethan", MULTI, "Mandarin and English", "en-us+m2", 45, 170),
        _v("mei", MULTI, "Mandarin and English", "en-us+f3", 62, 170),
        _v("dmitri", MULTI, "Russian and English", "en-us+m6", 35, 165),
        _v("lukas", MULTI, "German and English", "en-us+m1", 45, 170),
        _v("lena", MULTI, "German and English", "en-us+f2", 58, 170),
        _v("pierre", MULTI, "French and English", "en-us+m4", 45, 170),
        _v("mina", MULTI, "Korean and English", "en-us+f4", 65, 170),
        _v("joon", MULTI, "Korean and English", "en-us+m5", 45, 170),
        _v("ren", MULTI, "Japanese and English", "en-us+m3", 50, 170),
        _v("hana", MULTI, "Japanese and English", "en-us+f1", 65, 170),
        _v("giulia", MULTI, "Italian and English", "en-us+f5", 60, 175),
        _v("luca", MULTI, "Italian and English", "en-us+m2", 45, 175),
        _v("lucia", MULTI, "Spanish and English", "en-us+f3", 58, 175),
        _v("mateo", MULTI, "Spanish and English", "en-us+m4", 45, 175),
        _v("diego", MULTI, "Spanish (Latin American) and English", "en-us+m1", 45, 175),
    )
}
DEFAULT_VOICE = "ivy"
# Pre-Voice-Agent-API names: refused at session.update, as upstream does.
RETIRED_VOICES = frozenset({"claire", "dawn", "josh", "grace", "pete"})

_CACHE_SIZE = 64
_cache: OrderedDict[tuple[str, str, str], bytes] = OrderedDict()


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def engine_for(setting: str) -> str:
    """What `synthesize` uses under this setting: "espeak-ng" or "synth"."""
    return "espeak-ng" if setting == "auto" and espeak_available() else "synth"


async def synthesize(text: str, voice_id: str = DEFAULT_VOICE, *, engine: str = "auto") -> bytes:
    """`text` spoken by `voice_id` as PCM16 mono at 24 kHz (cached per voice and text)."""
    voice = VOICES.get(voice_id, VOICES[DEFAULT_VOICE])
    chosen = engine_for(engine)
    key = (chosen, voice.id, text)
    cached = _cache.get(key)
    if cached is not None:
        _cache.move_to_end(key)
        return cached
    pcm = b""
    if chosen == "espeak-ng":
        try:
            pcm = await _espeak(text, voice)
        except (OSError, ValueError) as exc:
            logger.warning("emulator.tts.espeak_failed", extra={"error": str(exc)})
    if not pcm:
        pcm = await asyncio.to_thread(synth_voiced, text, voice)
    _cache[key] = pcm
    if len(_cache) > _CACHE_SIZE:
        _cache.popitem(last=False)
    return pcm


async def _espeak(text: str, voice: Voice) -> bytes:
    proc = await asyncio.create_subprocess_exec(
        "espeak-ng",
        "--stdin",
        "--stdout",
        "-v",
        voice.espeak,
        "-p",
        str(voice.pitch),
        "-s",
        str(voice.speed),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await asyncio.wait_for(proc.communicate(text.encode()), timeout=20)
    if proc.returncode != 0:
        raise ValueError(f"espeak-ng exited with {proc.returncode}")
    pcm, rate = _parse_wav16(out)
    return await asyncio.to_thread(resample_pcm16, pcm, rate, OUTPUT_RATE)


def _parse_wav16(data: bytes) -> tuple[bytes, int]:
    """espeak-ng's stdout WAV (mono PCM16; its sizes say 'unknown') to (pcm, rate)."""
    if len(data) < 44 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("espeak-ng did not write a WAV")
    rate = struct.unpack_from("<I", data, 24)[0]
    at = data.find(b"data", 12)
    if at < 0:
        raise ValueError("WAV without data")
    pcm = data[at + 8 :]
    return pcm[: len(pcm) - len(pcm) % 2], rate


_SYLLABLE = re.compile(r"[aeiouy]+", re.IGNORECASE)


def synth_voiced(text: str, voice: Voice) -> bytes:
    """A speech-like stand-in: one harmonic burst per vowel group, pauses between words."""
    rate = OUTPUT_RATE
    f0 = 90.0 + voice.pitch * 1.6  # 90-250 Hz: a low male to a high female voice
    syllable_s, gap_s, word_gap_s = 0.16, 0.04, 0.12
    pieces: list[np.typing.NDArray[np.float64]] = []
    for word in text.split():
        count = max(1, len(_SYLLABLE.findall(word)))
        for k in range(count):
            n = int(rate * syllable_s)
            t = np.arange(n) / rate
            # Pitch falls a little over each syllable, as in speech.
            phase = 2 * np.pi * np.cumsum(f0 * (1.0 - 0.1 * t / syllable_s)) / rate
            wave = sum(np.sin(h * phase) / h for h in range(1, 9))
            envelope = np.hanning(n)
            pieces.append(0.25 * wave * envelope)
            pieces.append(np.zeros(int(rate * (gap_s if k < count - 1 else word_gap_s))))
    if not pieces:
        return b""
    return float_to_pcm16(np.concatenate(pieces))
