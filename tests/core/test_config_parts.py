"""Each feature's part of the settings: built from the same environment variables, frozen,
cached, rebuilt in a copy, and keeping secrets secret."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from pydantic import BaseModel, SecretStr, ValidationError

from app.core.config import PARTS, Settings, get_settings
from app.core.secretbox import secret_box


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No setting leaks in from the machine (environment or a `.env` in the cwd)."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.delenv("APP_ENV", raising=False)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()


def test_parts_read_the_unchanged_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "LLM_MAX_TOKENS": "77",
        "LLM_SUMMARY_LEASE_S": "12.5",
        "TOKEN_MAX_EXPIRES_IN_S": "30",
        "TOKEN_STREAMING_ENCODING": "pcm_mulaw",
        "SESSION_COOKIE_NAME": "sid",
        "CORS_ORIGINS": "https://app.example.com",
        "WEBHOOK_MAX_BODY_BYTES": "4096",
        "RELAY_RETRY_SCHEDULE_S": "1,2,3",
        "RELAY_ALLOWED_HOSTS": "Hooks.Example.com, *.trusted.test",
        "WS_RELAY_SPEECH_MODELS": "u3-rt-pro",
        "WS_RELAY_QUEUE_MESSAGES": "8",
        "METRICS_PORT": "9100",
        "MAX_UPLOAD_BYTES": "1000000",
        "UPLOAD_CHUNK_BYTES": "8192",
        "UPLOAD_RELAY_BUFFER_BYTES": "65536",
        "UPSTREAM_RETRY_ATTEMPTS": "2",
        "UPSTREAM_TRANSPORT": "httpx",
        "ASSEMBLYAI_REGION": "eu",
        "DEFAULT_SPEECH_MODELS": "universal-2",
        "IDEMPOTENCY_WAIT_S": "7",
        "POLL_INITIAL_DELAY_S": "0.5",
        "PUBLIC_BASE_URL": "https://proxy.example.com/",
        "RECONCILER_POLL_SCHEDULE_S": "1,4",
        "RECONCILER_TICK_S": "0.25",
        "SUBMIT_ORPHAN_AFTER_S": "900",
    }.items():
        monkeypatch.setenv(name, value)
    s = Settings(_env_file=None)
    assert s.llm.max_tokens == 77
    assert s.llm.summary_lease_s == 12.5
    assert s.llm.allowed_models == s.llm_allowed_models
    assert s.tokens.max_expires_in_s == 30
    assert s.tokens.streaming_encoding == "pcm_mulaw"
    assert s.tokens.streaming_ws_url == s.streaming_ws_url
    assert s.identity.session_cookie_name == "sid"
    assert s.identity.cors_origins == ("https://app.example.com",)
    assert s.webhooks.max_body_bytes == 4096
    assert s.webhooks.relay_schedule == (1.0, 2.0, 3.0)
    assert s.relay_urls.allowed_hosts == ("hooks.example.com", "*.trusted.test")
    assert s.webhooks.relay_urls is s.relay_urls
    assert s.relay.speech_models == ("u3-rt-pro",)
    assert s.relay.queue_messages == 8
    assert s.relay.identity is s.identity
    assert s.metrics.port == 9100
    assert (s.uploads.max_bytes, s.uploads.chunk_bytes) == (1_000_000, 8192)
    assert s.uploads.relay_buffer_bytes == 65536
    assert (s.upstream.retry_attempts, s.upstream.transport) == (2, "httpx")
    assert s.upstream.rest_base_url == "https://api.eu.assemblyai.com"
    assert s.upstream.key.get_secret_value() == s.upstream_key()  # the emulator's, here
    assert s.transcripts.default_speech_models == ("universal-2",)
    assert (s.transcripts.idempotency_wait_s, s.transcripts.poll_initial_delay_s) == (7.0, 0.5)
    assert s.transcripts.public_base_url == "https://proxy.example.com"
    assert s.transcripts.uploads is s.uploads
    assert s.transcripts.relay_urls is s.relay_urls
    assert s.reconciler.poll_schedule == (1.0, 4.0)
    assert s.reconciler.error_backoff == (2.0, 5.0, 15.0, 60.0, 300.0)
    assert (s.reconciler.tick_s, s.reconciler.submit_orphan_after_s) == (0.25, 900.0)
    assert s.reconciler.upstream_retry_attempts == 2
    assert s.reconciler.transcripts is s.transcripts


def test_every_part_is_frozen_and_built_once() -> None:
    s = Settings(_env_file=None)
    for name in PARTS:
        part = getattr(s, name)
        assert isinstance(part, BaseModel)
        assert getattr(s, name) is part
        field = next(iter(type(part).model_fields))
        with pytest.raises(ValidationError):
            setattr(part, field, getattr(part, field))


def test_a_copy_builds_its_parts_from_its_own_values() -> None:
    s = Settings(_env_file=None)
    assert s.llm.max_tokens == 4000  # built, so cached on `s` before the copy
    assert s.relay.stall_timeout_s == 10.0
    copied = s.model_copy(update={"llm_max_tokens": 5, "ws_relay_stall_timeout_s": 1.0})
    assert copied.llm.max_tokens == 5
    assert copied.relay.stall_timeout_s == 1.0
    assert s.llm.max_tokens == 4000


def test_jwt_part_only_when_jwt_authentication_is_configured() -> None:
    assert Settings(_env_file=None).identity.jwt is None
    s = Settings(
        _env_file=None,
        jwt_hs256_secret=SecretStr("k" * 40),
        jwt_issuer="https://idp.example.com",
        jwt_audience="aai-proxy",
        jwt_key_id="00000000-0000-0000-0000-000000000001",
    )
    assert s.identity.jwt is not None
    assert s.identity.jwt.issuer == "https://idp.example.com"
    assert s.identity.jwt.leeway_s == 30


def test_parts_keep_secrets_out_of_their_text() -> None:
    key = Fernet.generate_key().decode()
    s = Settings(
        _env_file=None,
        assemblyai_api_key=SecretStr("real-upstream-key-123"),
        secrets_key=SecretStr(key),
        metrics_token=SecretStr("scrape-token-456"),
        redis_url=SecretStr("redis://:redis-pass-789@127.0.0.1:6379/0"),
    )
    assert s.relay.upstream_key.get_secret_value() == "real-upstream-key-123"
    assert s.upstream.key.get_secret_value() == "real-upstream-key-123"
    text = " ".join(repr(getattr(s, name)) for name in PARTS)
    for secret in ("real-upstream-key-123", key, "scrape-token-456", "redis-pass-789"):
        assert secret not in text
    # Every part that seals (webhooks, transcripts) holds the one secrets part.
    assert s.secrets.fernet_keys() == s.secrets_keys() == (key,)
    assert s.webhooks.secrets is s.secrets
    assert s.transcripts.secrets is s.secrets
    sealed = secret_box(s.webhooks.secrets).seal("signing-secret")
    assert secret_box(s.transcripts.secrets).open(sealed) == "signing-secret"
