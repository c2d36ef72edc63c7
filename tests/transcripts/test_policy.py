"""Submit policy: refused before any upstream call, with the right parameter in the message."""

from __future__ import annotations

import pytest

from app.core.errors import BadRequest
from app.transcripts.policy import check_submit

DEFAULT = ["universal-3-pro", "universal-2"]
AUDIO = "https://example.com/a.wav"


def check(body: object, **kwargs: object) -> object:
    return check_submit(body, default_speech_models=DEFAULT, **kwargs)  # type: ignore[arg-type]


def test_defaults_speech_models_and_keeps_other_parameters() -> None:
    plan = check({"audio_url": AUDIO, "speaker_labels": True, "punctuate": None})
    assert plan.params == {
        "audio_url": AUDIO,
        "speaker_labels": True,
        "speech_models": DEFAULT,
    }
    assert plan.caller_webhook is None


@pytest.mark.parametrize(
    ("name", "value", "hint"),
    [
        ("auto_chapters", True, "LLM Gateway"),
        ("summarization", True, "LLM Gateway"),
        ("summary_model", "informative", "LLM Gateway"),
        ("summary_type", "bullets", "LLM Gateway"),
        ("medical_mode", True, 'domain: "medical-v1"'),
        ("transcript_ids", ["abc"], "LeMUR"),
        ("speech_model", "universal-2", "speech_models"),
    ],
)
def test_deprecated_parameters_are_refused_with_a_hint(name: str, value: object, hint: str) -> None:
    with pytest.raises(BadRequest) as info:
        check({"audio_url": AUDIO, name: value})
    assert hint in info.value.message
    assert name in info.value.message


def test_explicit_off_values_of_deprecated_parameters_pass_and_are_not_sent() -> None:
    plan = check({"audio_url": AUDIO, "auto_chapters": False, "speech_model": None})
    assert "auto_chapters" not in plan.params
    assert "speech_model" not in plan.params


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"audio_url": ""},
        {"audio_url": "ftp://x/y"},
        {"audio_url": AUDIO, "speech_models": []},
        {"audio_url": AUDIO, "speech_models": "universal-2"},
        {"audio_url": AUDIO, "speech_models": ["nano"]},
        {"audio_url": AUDIO, "speech_models": ["universal-2", "universal-2"]},
        {"audio_url": AUDIO, "keyterms_prompt": "a b"},
        {"audio_url": AUDIO, "keyterms_prompt": ["ok", " "]},
        {"audio_url": AUDIO, "webhook_url": "not a url"},
        {"audio_url": AUDIO, "webhook_auth_header_name": "X"},
        {"audio_url": AUDIO, "webhook_url": "https://h/x", "webhook_auth_header_name": "X"},
        ["not", "an", "object"],
    ],
)
def test_bad_bodies_are_refused(body: object) -> None:
    with pytest.raises(BadRequest):
        check(body)


def test_unknown_speech_model_names_the_known_ones() -> None:
    with pytest.raises(BadRequest) as info:
        check({"audio_url": AUDIO, "speech_models": ["best"]})
    assert "best" in info.value.message
    assert "universal-3-pro" in info.value.message


def test_keyterms_limit_is_the_strictest_model_of_the_fallback_list() -> None:
    terms_201 = [f"term {i}" for i in range(201)]
    with pytest.raises(BadRequest) as info:
        check({"audio_url": AUDIO, "keyterms_prompt": terms_201})  # default includes U2
    assert "universal-2" in info.value.message
    assert "200" in info.value.message
    plan = check(
        {"audio_url": AUDIO, "keyterms_prompt": terms_201, "speech_models": ["universal-3-pro"]}
    )
    assert len(plan.params["keyterms_prompt"]) == 201
    with pytest.raises(BadRequest, match="1000"):
        check(
            {
                "audio_url": AUDIO,
                "speech_models": ["universal-3-pro"],
                "keyterms_prompt": [f"t{i}" for i in range(1001)],
            }
        )
    check({"audio_url": AUDIO, "keyterms_prompt": terms_201[:200]})


def test_caller_webhook_is_kept_apart_from_upstream_parameters() -> None:
    plan = check(
        {
            "audio_url": AUDIO,
            "webhook_url": "https://caller.example/hook",
            "webhook_auth_header_name": "X-Caller",
            "webhook_auth_header_value": "caller-secret",
        }
    )
    assert not {"webhook_url", "webhook_auth_header_name", "webhook_auth_header_value"} & set(
        plan.params
    )
    assert plan.caller_webhook is not None
    assert plan.caller_webhook.url == "https://caller.example/hook"
    assert plan.caller_webhook.auth_header_value == "caller-secret"


def test_upload_and_submit_config_must_not_name_an_audio_url() -> None:
    plan = check({"speaker_labels": True}, audio_url_required=False)
    assert "audio_url" not in plan.params
    with pytest.raises(BadRequest, match="not both"):
        check({"audio_url": AUDIO}, audio_url_required=False)


def test_a_keyterm_is_at_most_six_words() -> None:
    check({"audio_url": AUDIO, "keyterms_prompt": ["one two three four five six"]})
    with pytest.raises(BadRequest, match="at most 6 words"):
        check({"audio_url": AUDIO, "keyterms_prompt": ["one two three four five six seven"]})
