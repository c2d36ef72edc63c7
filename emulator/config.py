"""The emulator's own settings (environment variables prefixed `EMULATOR_`)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class EmulatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EMULATOR_", extra="ignore", frozen=True)

    api_key: SecretStr = SecretStr("emulator-key")
    region: Literal["us", "eu"] = "us"
    # Fault injection and inspection endpoints (`/_emulator/...`): off unless asked for.
    test_mode: bool = False
    # Echoed by GET /_emulator/health: `aai-proxy serve` sets a random one to know that the
    # emulator answering on EMULATOR_PORT is the one it just started.
    instance_nonce: str = ""
    # Where uploads are kept; in sink mode they are only counted and hashed.
    data_dir: Path = Path(".data/emulator")
    upload_sink: bool = False
    max_upload_bytes: int = Field(2_200_000_000, ge=1)
    # More keys the emulator accepts (comma-separated), so "only the same key" rules
    # (upload_url, transcript ownership) can be exercised with two callers.
    extra_api_keys: SecretStr = SecretStr("")
    # Transcription schedule: queued for `queued_s`, then processing for
    # max(min_processing_s, audio_duration * processing_factor).
    processing_factor: float = Field(0.05, ge=0)
    min_processing_s: float = Field(0.5, ge=0)
    queued_s: float = Field(0.2, ge=0)
    # Webhook delivery as upstream: 10 retries 10 s apart, 10 s answer timeout.
    webhook_retry_interval_s: float = Field(10.0, ge=0)
    webhook_timeout_s: float = Field(10.0, gt=0)
    webhook_max_retries: int = Field(10, ge=0)
    # Test mode only: finish the job and deliver its webhook before POST /v2/transcript
    # answers (to test a proxy that must already know the job when the webhook arrives).
    webhook_before_response: bool = False
    # "auto": Whisper (the `recognition` extra) when installed, else placeholder words;
    # "placeholder": always.
    recognition: Literal["auto", "placeholder"] = "auto"
    # Streaming STT (/v3/ws) and Voice Agent (/v1/ws). Open sessions per product; one more
    # is accepted and closed with 3009.
    max_concurrent_sessions: int = Field(100, ge=1)
    # Caps every WebSocket session (3008 on /v3/ws); a token's max_session_duration_seconds
    # can only lower it. Upstream: 3 hours.
    max_session_duration_s: float = Field(10_800, gt=0)
    # How far streamed audio may run ahead of the wall clock (a leaky bucket drained in real
    # time) before /v3/ws closes with 3007: absorbs one 1000 ms chunk plus network jitter.
    streaming_burst_ms: int = Field(2000, ge=0)
    # Voice Agent: session.resume works this long after a disconnect; reply audio is paced
    # at this multiple of real time; "synth" replaces espeak-ng speech by a voiced buzz.
    agent_resume_window_s: float = Field(30.0, ge=0)
    agent_reply_speed: float = Field(1.0, gt=0)
    tts: Literal["auto", "synth"] = "auto"

    def api_keys(self) -> list[str]:
        extra = [k.strip() for k in self.extra_api_keys.get_secret_value().split(",")]
        return [self.api_key.get_secret_value(), *[k for k in extra if k]]


@lru_cache
def get_emulator_settings() -> EmulatorSettings:
    return EmulatorSettings()
