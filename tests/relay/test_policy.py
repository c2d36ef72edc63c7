"""The relay's query policy and the query it sends upstream."""

from __future__ import annotations

from typing import Any

import pytest

from app.core.config import RelaySettings, Settings
from app.relay.policy import PolicyRefusal, check_streaming_query
from app.relay.service import _query_without_token, _reason


def settings(**values: Any) -> RelaySettings:
    return Settings(_env_file=None, **values).relay


def test_the_token_never_goes_upstream_and_the_rest_is_byte_for_byte() -> None:
    raw = b"sample_rate=16000&token=aaip_rt_x&keyterms_prompt=%5B%22a%22%5D&token&tokenx=1"
    assert _query_without_token(raw) == "sample_rate=16000&keyterms_prompt=%5B%22a%22%5D&tokenx=1"
    assert _query_without_token(b"") == ""
    assert _query_without_token(b"token=abc") == ""


def test_parameters_outside_the_allowlist_are_refused_with_3006() -> None:
    s = settings()
    shape = check_streaming_query(
        {"sample_rate": "8000", "encoding": "pcm_mulaw"}, ["sample_rate", "encoding"], s
    )
    assert shape.audio_seconds(8000) == 1.0
    with pytest.raises(PolicyRefusal) as refused:
        check_streaming_query({"webhook_url": "http://x"}, ["webhook_url"], s)
    assert refused.value.code == 3006
    assert "webhook_url" in refused.value.reason
    narrow = settings(ws_relay_allowed_params="sample_rate")
    with pytest.raises(PolicyRefusal):
        check_streaming_query({"speech_model": "u3-rt-pro"}, ["speech_model"], narrow)


def test_speech_model_allowlist() -> None:
    s = settings(ws_relay_speech_models="u3-rt-pro,universal-streaming-english")
    check_streaming_query({"speech_model": "u3-rt-pro"}, ["speech_model"], s)
    for query in ({"speech_model": "whisper-rt"}, {}):
        with pytest.raises(PolicyRefusal) as refused:
            check_streaming_query(query, list(query), s)
        assert refused.value.code == 3006


def test_close_reasons_fit_a_close_frame() -> None:
    assert len(_reason("é" * 200).encode()) <= 123
