"""Unit tests of the WebSocket halves' pure parts: audio helpers, the VAD, tokens, params."""

from __future__ import annotations

import numpy as np
import pytest

from emulator.audio import (
    TurnDetector,
    chunk_duration_ms,
    encode_output,
    pcm16_to_alaw,
    pcm16_to_mulaw,
    to_pcm16,
)
from emulator.recognition import alaw_to_float, mulaw_to_float
from emulator.streaming import ParamError, apply_update, format_words, parse_params
from emulator.tokens import TokenStore


def tone(seconds: float, rate: int, amplitude: float = 0.3) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * 220 * t) * amplitude * 32767).astype("<i2").tobytes()


def quiet(seconds: float, rate: int) -> bytes:
    return b"\x00\x00" * int(seconds * rate)


def test_chunk_duration_follows_rate_and_encoding() -> None:
    assert chunk_duration_ms(3200, 16_000, "pcm_s16le") == 100.0
    assert chunk_duration_ms(800, 8_000, "pcm_mulaw") == 100.0
    assert chunk_duration_ms(2400, 24_000, "audio/pcm") == 50.0


@pytest.mark.parametrize(
    ("encode", "decode"), [(pcm16_to_mulaw, mulaw_to_float), (pcm16_to_alaw, alaw_to_float)]
)
def test_g711_round_trip(encode: object, decode: object) -> None:
    pcm = tone(0.1, 8000)
    encoded = encode(pcm)  # type: ignore[operator]
    assert len(encoded) == len(pcm) // 2
    original = np.frombuffer(pcm, dtype="<i2") / 32768.0
    back = decode(encoded)  # type: ignore[operator]
    # G.711 keeps ~38 dB SNR on a loud tone.
    noise = np.mean((back - original) ** 2)
    assert 10 * np.log10(np.mean(original**2) / noise) > 30


def test_mulaw_decode_to_pcm16() -> None:
    assert to_pcm16(b"\xff\x7f", "pcm_mulaw") == b"\x00\x00\x00\x00"


def test_output_encodings_and_rates() -> None:
    pcm = tone(1.0, 24_000)
    assert encode_output(pcm, 24_000, "audio/pcm") == (pcm, 24_000)
    for encoding in ("audio/pcmu", "audio/pcma"):
        data, rate = encode_output(pcm, 24_000, encoding)
        assert rate == 8000
        assert abs(len(data) - 8000) <= 2


def test_turn_detector_finds_start_pause_and_end() -> None:
    rate = 16_000
    detector = TurnDetector(rate, pause_silence_ms=100, end_silence_ms=500)
    audio = quiet(0.3, rate) + tone(0.5, rate) + quiet(0.2, rate) + tone(0.3, rate)
    audio += quiet(0.7, rate)
    events = []
    for i in range(0, len(audio), 1600):  # 50 ms pieces: frames straddle them
        events += detector.feed(audio[i : i + 1600])
    assert [(e.kind, e.at_ms) for e in events] == [
        ("start", 300),
        ("pause", 800),  # 100 ms into the 200 ms gap, which does not end the turn
        ("pause", 1300),
        ("end", 1300),
    ]
    assert not detector.in_turn
    assert detector.position_ms == 2000


def test_turn_detector_ignores_clicks_and_quiet_noise() -> None:
    rate = 16_000
    detector = TurnDetector(rate)
    noise = (np.random.default_rng(1).normal(0, 0.002, rate) * 32767).astype("<i2").tobytes()
    click = tone(0.02, rate)  # one 20 ms frame: shorter than the 60 ms a start needs
    assert detector.feed(noise + click + quiet(0.5, rate)) == []


def test_force_end() -> None:
    detector = TurnDetector(16_000)
    detector.feed(tone(0.4, 16_000))
    event = detector.force_end()
    assert event is not None
    assert (event.kind, event.at_ms) == ("end", 400)
    assert detector.force_end() is None


def test_tokens_single_use_per_product_and_expiry() -> None:
    now = [100.0]
    store = TokenStore(clock=lambda: now[0])
    token = store.mint("streaming", 10, 3600)
    assert store.redeem(token, "agent") is None  # the other product: refused, not consumed
    grant = store.redeem(token, "streaming")
    assert grant is not None
    assert grant.max_session_s == 3600
    assert store.redeem(token, "streaming") is None  # single use
    late = store.mint("agent", 10, 60)
    now[0] += 10
    assert store.redeem(late, "agent") is None  # expired
    assert store.redeem(None, "agent") is None


def test_expired_tokens_are_purged_on_mint() -> None:
    now = [0.0]
    store = TokenStore(clock=lambda: now[0])
    for _ in range(100):
        store.mint("streaming", 1, 60)
    now[0] = 5.0
    store.mint("streaming", 60, 60)
    assert len(store) == 1


def params(**query: str) -> dict[str, str]:
    return query


def test_parse_params_defaults_per_model() -> None:
    u3 = parse_params(params(sample_rate="16000", speech_model="u3-rt-pro"), {})
    assert (u3.min_turn_silence, u3.max_turn_silence, u3.encoding) == (100, 1000, "pcm_s16le")
    universal = parse_params(params(sample_rate="8000", encoding="pcm_mulaw"), {})
    assert universal.speech_model == "universal-streaming-english"
    assert (universal.min_turn_silence, universal.max_turn_silence) == (400, 1280)


def test_parse_params_keyterms_bools_and_thresholds() -> None:
    query = params(sample_rate="16000", speaker_labels="True", vad_threshold="0.5")
    parsed = parse_params(query, {"keyterms_prompt": ['["AssemblyAI", "Universal-3"]']})
    assert parsed.keyterms_prompt == ["AssemblyAI", "Universal-3"]
    assert parsed.speaker_labels is True
    assert parsed.energy_threshold() == pytest.approx(0.01)
    repeated = parse_params(params(sample_rate="16000"), {"keyterms_prompt": ["a", "b"]})
    assert repeated.keyterms_prompt == ["a", "b"]


@pytest.mark.parametrize(
    "query",
    [
        {"sample_rate": "abc"},
        {"sample_rate": "4000"},
        {"sample_rate": "16000", "speaker_labels": "maybe"},
        {"sample_rate": "16000", "min_turn_silence": "2000", "max_turn_silence": "1000"},
        {"sample_rate": "16000", "vad_threshold": "2"},
        {"sample_rate": "16000", "domain": "legal"},
        {"sample_rate": "16000", "encoding": "opus"},
    ],
)
def test_parse_params_refusals(query: dict[str, str]) -> None:
    with pytest.raises(ParamError):
        parse_params(query, {})


def test_update_configuration_fields() -> None:
    parsed = parse_params(params(sample_rate="16000"), {})
    apply_update(parsed, {"max_turn_silence": 300, "min_turn_silence": 50, "format_turns": True})
    assert (parsed.min_turn_silence, parsed.max_turn_silence, parsed.format_turns) == (
        50,
        300,
        True,
    )
    with pytest.raises(ParamError):
        apply_update(parsed, {"keyterms_prompt": ["x" * 51]})


def test_format_words() -> None:
    assert format_words(["i", "think", "so"]) == ["I", "think", "so."]
    assert format_words(["hello", "there?"]) == ["Hello", "there?"]
    assert format_words([]) == []
