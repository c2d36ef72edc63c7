"""Audio decoding, resampling, the energy VAD, placeholder words and the Whisper recogniser."""

from __future__ import annotations

import shutil
import struct
import subprocess
import time
from collections.abc import Callable

import numpy as np
import pytest

from emulator import recognition as r


def wav_bytes(payload: bytes, *, rate: int, channels: int, bits: int, tag: int = 1) -> bytes:
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt
    chunks += b"data" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


def tone(freq: float, rate: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return amplitude * np.sin(2 * np.pi * freq * t)


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 24000, 44100, 48000])
def test_resampler_keeps_the_passband_and_rejects_aliases(rate: int) -> None:
    out = r.resample(tone(1000, rate, 1.0), rate)
    assert out.size == 16000
    expected = tone(1000, 16000, 1.0)
    assert np.max(np.abs(out[300:-300] - expected[300:-300])) < 1e-3
    if rate > 16000:
        # 11 kHz is above the new Nyquist (8 kHz): it must be filtered out, not folded down.
        alias = r.resample(tone(11000, rate, 1.0), rate)
        assert np.max(np.abs(alias[300:-300])) < 1e-3


def test_resampler_is_fast() -> None:
    samples = np.random.default_rng(1).uniform(-1, 1, 44100 * 30)
    started = time.perf_counter()
    r.resample(samples, 44100)
    assert time.perf_counter() - started < 2.0  # 30 s of CD audio; ~0.1 s on a quiet core


def test_decodes_pcm16_stereo_8bit_float_mulaw_alaw() -> None:
    mono = tone(440, 16000, 0.5)
    pcm16 = r.float_to_pcm16(mono)
    reference = np.frombuffer(pcm16, "<i2").astype(float) / 32768

    def decoded(data: bytes) -> np.ndarray:
        return np.frombuffer(r.decode_wav(data).pcm16, "<i2").astype(float) / 32768

    assert r.decode_wav(wav_bytes(pcm16, rate=16000, channels=1, bits=16)).pcm16 == pcm16
    stereo = np.stack([mono, mono], axis=1).reshape(-1)
    got = decoded(wav_bytes(r.float_to_pcm16(stereo), rate=16000, channels=2, bits=16))
    assert np.max(np.abs(got - reference)) < 1e-4
    eight = np.clip(np.round(mono * 128 + 128), 0, 255).astype(np.uint8).tobytes()
    assert np.max(np.abs(decoded(wav_bytes(eight, rate=16000, channels=1, bits=8)) - mono)) < 0.01
    f32 = mono.astype("<f4").tobytes()
    assert (
        np.max(np.abs(decoded(wav_bytes(f32, rate=16000, channels=1, bits=32, tag=3)) - mono))
        < 1e-4
    )
    # G.711: the codecs are lossy (~1 % of full scale near the peaks).
    for tag, codec in [(7, "mu-law"), (6, "a-law")]:
        encoded = _g711(pcm16, codec)
        if encoded is None:
            continue
        got = decoded(wav_bytes(encoded, rate=16000, channels=1, bits=8, tag=tag))
        assert np.max(np.abs(got - mono)) < 0.02, codec


def _g711(pcm16: bytes, codec: str) -> bytes | None:
    """Encode with sox, an independent implementation (None when sox is missing)."""
    if shutil.which("sox") is None:
        return None
    result = subprocess.run(
        [
            "sox",
            "-t",
            "raw",
            "-r",
            "16000",
            "-e",
            "signed",
            "-b",
            "16",
            "-c",
            "1",
            "-",
            "-t",
            "raw",
            "-e",
            codec,
            "-b",
            "8",
            "-",
        ],
        input=pcm16,
        capture_output=True,
        check=True,
    )
    return result.stdout


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello",
        b"RIFF\x00\x00\x00\x00WAVEjunk",
        wav_bytes(b"\x00" * 10, rate=16000, channels=1, bits=12),
    ],
)
def test_unreadable_audio_raises(data: bytes) -> None:
    with pytest.raises(r.AudioDecodeError):
        r.decode_wav(data)


def test_wav_duration_from_header() -> None:
    data = wav_bytes(b"\x00" * 32000 * 3, rate=16000, channels=1, bits=16)
    assert r.wav_duration_from_header(data[:1000], len(data)) == pytest.approx(3.0)
    assert r.wav_duration_from_header(b"nope", 100) is None


def test_vad_and_placeholder_words_follow_the_audio() -> None:
    silence = np.zeros(8000)
    audio = np.concatenate(
        [silence, tone(300, 16000, 1.2), silence, tone(300, 16000, 0.8), silence]
    )
    pcm = r.float_to_pcm16(audio)
    segments = r.voiced_segments(pcm)
    assert len(segments) == 2
    assert abs(segments[0][0] - 500) <= 40
    assert abs(segments[0][1] - 1700) <= 40
    assert abs(segments[1][0] - 2200) <= 40
    words = r.recognize(pcm, mode="placeholder")
    assert [w.text for w in words] == ["alpha", "bravo", "charlie", "delta", "echo"]
    assert all(segments[0][0] <= w.start_ms < w.end_ms <= segments[0][1] for w in words[:3])
    assert all(segments[1][0] <= w.start_ms < w.end_ms <= segments[1][1] for w in words[3:])
    assert r.recognize(pcm, mode="placeholder") == words  # deterministic
    assert r.recognize(pcm, mode="placeholder", first=5)[0].text == "foxtrot"
    assert r.recognize(r.float_to_pcm16(np.zeros(16000)), mode="placeholder") == []
    # Another sample rate: the same words at the same times.
    at8k = r.float_to_pcm16(r.resample(audio, 16000, 8000))
    assert [w.text for w in r.recognize(at8k, 8000, mode="placeholder")] == [w.text for w in words]


needs_recogniser = pytest.mark.skipif(
    not r.whisper_available(), reason="the recognition extra is not installed"
)


def word_errors(reference: str, heard: list[str]) -> int:
    """Word-level edit distance (substitutions + deletions + insertions)."""
    ref = reference.lower().split()
    row = list(range(len(heard) + 1))
    for i, want in enumerate(ref, 1):
        diagonal, row[0] = row[0], i
        for j, got in enumerate(heard, 1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (want != got))
    return row[-1]


@needs_recogniser
def test_the_recogniser_hears_the_pangram(speech_wav: Callable[..., bytes]) -> None:
    # pocketsphinx heard "we don't got absolutely the da" here.
    sentence = "the quick brown fox jumps over the lazy dog"
    audio = r.decode_wav(speech_wav(sentence, "en-us"))
    r.warm_up()
    started = time.perf_counter()
    words = r.recognize(audio.pcm16)
    elapsed = time.perf_counter() - started
    texts = [w.text for w in words]
    # At most 2 of 9 words wrong (Whisper base hears "dumps" for "jumps" on this voice).
    assert word_errors(sentence, texts) <= 2, texts
    assert {"quick", "brown", "fox", "lazy", "dog"} <= set(texts), texts
    assert all(0 <= w.start_ms < w.end_ms <= audio.duration_s * 1000 + 10 for w in words)
    assert [w.start_ms for w in words] == sorted(w.start_ms for w in words)
    assert all(0 <= w.confidence <= 1 for w in words)
    assert elapsed < 5 * audio.duration_s  # generous: the CPU is shared
    assert r.recognize(r.float_to_pcm16(np.zeros(16000))) == []


@needs_recogniser
def test_the_recogniser_says_numbers_as_words(speech_wav: Callable[..., bytes]) -> None:
    audio = r.decode_wav(speech_wav("one two three four five"))
    texts = [w.text for w in r.recognize(audio.pcm16)]
    # Whisper writes "1, 2, 3"; the emulator's words are spoken, lower case, unpunctuated.
    assert len(set(texts) & {"one", "two", "three", "four", "five"}) >= 4, texts
    assert all(t == r.word_texts(t)[0] and t.isalpha() for t in texts), texts


def test_whisper_words_become_spoken_unpunctuated_words() -> None:
    assert r.word_texts(" Hello,") == ["hello"]
    assert r.word_texts(" 5.") == ["five"]
    assert r.word_texts(" 342") == ["three", "hundred", "forty", "two"]
    assert r.word_texts(" 1,000") == ["one", "thousand"]
    assert r.word_texts(" 3:30") == ["three", "thirty"]
    assert r.word_texts("-fark") == ["fark"]
    assert r.word_texts(" round-trip") == ["round", "trip"]
    assert r.word_texts(" man's") == ["man's"]
    assert r.word_texts(" 'quoted'") == ["quoted"]
    assert r.word_texts(" ...") == []
    assert r.number_words(0) == ["zero"]
    assert r.number_words(2024) == ["two", "thousand", "twenty", "four"]
    assert r.number_words(1_000_017) == ["one", "million", "seventeen"]
