"""Settings: one class, read from the environment (and `.env`), cached by `get_settings()`."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Environment = Literal["development", "test", "production"]
Region = Literal["us", "eu"]
StreamingRegion = Literal["edge", "us", "eu"]

# Hosts exactly as AssemblyAI documents them (reference section 4).
REST_HOSTS: dict[str, str] = {
    "us": "https://api.assemblyai.com",
    "eu": "https://api.eu.assemblyai.com",
}
LLM_HOSTS: dict[str, str] = {
    "us": "https://llm-gateway.assemblyai.com",
    "eu": "https://llm-gateway.eu.assemblyai.com",
}
STREAMING_HOSTS: dict[str, str] = {
    "edge": "https://streaming.assemblyai.com",
    "us": "https://streaming.us.assemblyai.com",
    "eu": "https://streaming.eu.assemblyai.com",
}
AGENTS_HOST = "https://agents.assemblyai.com"
# LLM Gateway model IDs (reference section 8): exact strings; EU serves Anthropic and Google.
LLM_MODELS_BY_REGION: dict[str, tuple[str, ...]] = {
    "us": (
        "claude-opus-4-7",
        "claude-sonnet-4-6",
        "claude-haiku-4-5-20251001",
        "gpt-5.2",
        "gpt-5.1",
        "gpt-4.1",
        "gemini-3.5-flash",
        "gemini-2.5-pro",
        "gemini-2.5-flash",
        "kimi-k2.5",
        "qwen3-next-80b-a3b",
    ),
    "eu": (
        "claude-opus-4-7",
        "claude-sonnet-4-6",
        "claude-haiku-4-5-20251001",
        "gemini-3.5-flash",
        "gemini-2.5-pro",
        "gemini-2.5-flash",
    ),
}
EU_LLM_MODEL_PREFIXES = ("claude-", "gemini-")

# Query parameters of /v3/ws a relayed client may send by default: what the SDKs (Python
# 1.8, Node 4.41) send, without webhook_url and its auth header (a session's webhook is
# the service's business).
RELAY_DEFAULT_PARAMS = (
    "sample_rate",
    "encoding",
    "speech_model",
    "language_code",
    "language_codes",
    "language_detection",
    "domain",
    "inactivity_timeout",
    "format_turns",
    "keyterms_prompt",
    "prompt",
    "min_turn_silence",
    "max_turn_silence",
    "min_end_of_turn_silence_when_confident",
    "end_of_turn_confidence_threshold",
    "vad_threshold",
    "filter_profanity",
    "speaker_labels",
    "speaker_labels_revision_interval_ms",
    "max_speakers",
    "voice_focus",
    "voice_focus_threshold",
    "noise_suppression_model",
    "noise_suppression_threshold",
    "continuous_partials",
    "include_partial_turns",
    "redact_pii",
    "redact_pii_policies",
    "redact_pii_sub",
    "mode",
    "llm_gateway",
    "customer_support_audio_capture",
    "_customer_support_audio_capture",
    "acknowledge_silence",
    "agent_context",
    "interruption_delay",
    "session_heartbeat",
    "turn_left_pad_ms",
)
UPSTREAM_MAX_UPLOAD_BYTES = 2_200_000_000  # /v2/upload: 2.2 GB
PLACEHOLDER_SECRETS = {"changeme", "change-me", "secret", "your_api_key", "YOUR_API_KEY"}


# What seals the stored secrets (app/core/secretbox.py) when SECRETS_KEY is unset outside
# production. Public by construction (derived from a fixed phrase): development and tests only.
DEVELOPMENT_KEY = base64.urlsafe_b64encode(
    hashlib.sha256(b"aai-proxy development SECRETS_KEY (not secret)").digest()
).decode()


def parse_keys(value: str | None) -> tuple[str, ...]:
    """SECRETS_KEY's keys, in order; each must be a Fernet key (ValueError otherwise)."""
    if value is None:
        return ()
    keys = tuple(part.strip() for part in value.split(",") if part.strip())
    for key in keys:
        # What Fernet itself requires of a key, checked without importing it.
        try:
            valid = len(base64.urlsafe_b64decode(key.encode("ascii"))) == 32
        except (ValueError, UnicodeError):
            valid = False
        if not valid:
            raise ValueError(
                "SECRETS_KEY must be comma-separated Fernet keys (32 url-safe base64 bytes; "
                'make one with: python -c "from cryptography.fernet import Fernet; '
                'print(Fernet.generate_key().decode())")'
            )
    return keys


def _env_list(value: object, *, empty: list[str] | None) -> object:
    """A list setting from the environment: a JSON list, or comma-separated names (`empty`
    when none are named); anything else is left to pydantic."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [m.strip() for m in text.split(",") if m.strip()] or empty
    return value


# --- Each feature's part --------------------------------------------------------------------
# `Settings` below is the one place that reads the environment and validates it; each
# feature's functions receive only their part: a small frozen model built from it (and cached
# on it) by the property of the same name, e.g. `settings.llm`. Fields drop the feature's
# prefix where that reads naturally; the environment variable names stay as they are.


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True)


class LlmSettings(_Part):
    """app/llm: LLM Gateway policy (models, token caps, daily budgets) and summaries."""

    region: Region  # ASSEMBLYAI_REGION: which models the gateway serves
    allowed_models: tuple[str, ...]  # LLM_MODELS, or the region's list
    max_tokens: int  # LLM_MAX_TOKENS
    max_request_bytes: int  # LLM_MAX_REQUEST_BYTES
    daily_token_budget: int  # LLM_DAILY_TOKEN_BUDGET
    reservation_ttl_s: float  # LLM_RESERVATION_TTL_S
    timeout_s: float  # LLM_TIMEOUT_S
    summary_model: str  # LLM_SUMMARY_MODEL
    summary_max_tokens: int  # LLM_SUMMARY_MAX_TOKENS
    summary_chunk_chars: int  # LLM_SUMMARY_CHUNK_CHARS
    chapter_chars: int  # LLM_CHAPTER_CHARS
    summary_lease_s: float  # LLM_SUMMARY_LEASE_S
    summary_concurrency: int  # LLM_SUMMARY_CONCURRENCY
    summary_max_attempts: int  # LLM_SUMMARY_MAX_ATTEMPTS


class JwtSettings(_Part):
    """JWTs from the app's own identity provider (set when JWT_HS256_SECRET or JWT_JWKS_URL is)."""

    hs256_secret: SecretStr | None  # JWT_HS256_SECRET
    jwks_url: str | None  # JWT_JWKS_URL
    issuer: str  # JWT_ISSUER
    audience: str  # JWT_AUDIENCE
    key_id: str  # JWT_KEY_ID
    leeway_s: int  # JWT_LEEWAY_S
    jwks_cache_ttl_s: int  # JWKS_CACHE_TTL_S


class IdentitySettings(_Part):
    """app/identity and app/sessions: who is calling (keys, JWTs, session cookies, Origin)."""

    key_cache_ttl_s: float  # KEY_CACHE_TTL_S
    public_base_url: str | None  # PUBLIC_BASE_URL: one of our own origins
    cors_origins: tuple[str, ...]  # CORS_ORIGINS
    session_cookie_name: str  # SESSION_COOKIE_NAME
    session_ttl_s: int  # SESSION_TTL_S
    session_cookie_secure: bool | None  # SESSION_COOKIE_SECURE
    jwt: JwtSettings | None  # None: no JWT authentication


class TokenSettings(_Part):
    """app/tokens: temporary tokens (policy maxima, rate limits, browser defaults)."""

    # Policy maxima and limits (TOKEN_*); per-key overrides replace them.
    max_expires_in_s: int
    max_session_s: int
    key_mints_per_minute: int
    end_user_mints_per_minute: int
    key_daily_session_s: int
    end_user_daily_session_s: int
    # The relay's concurrent-session caps (WS_RELAY_*), overridable in the same per-key policy.
    relay_key_max_sessions: int
    relay_end_user_max_sessions: int
    limits_fail_open: bool  # TOKEN_LIMITS_FAIL_OPEN
    redis_url: SecretStr | None  # REDIS_URL: limits shared across instances
    rate_limit_key_prefix: str  # RATE_LIMIT_KEY_PREFIX
    key_cache_ttl_s: float  # KEY_CACHE_TTL_S: how long a key's policy is cached
    database_connect_timeout_s: float  # DATABASE_CONNECT_TIMEOUT_S: the audit writer's
    # Defaults put into the websocket_url handed to browsers (TOKEN_STREAMING_*).
    streaming_sample_rate: int
    streaming_encoding: Literal["pcm_s16le", "pcm_mulaw"]
    streaming_speech_model: str
    streaming_ws_url: str  # where browsers open /v3/ws with a token
    agents_ws_url: str  # and /v1/ws
    identity: IdentitySettings  # a mint on a session cookie follows the cookie rules


class SecretsSettings(_Part):
    """The keys that seal the secrets stored readable (app/core/secretbox.py's `secret_box`
    takes this part): relay signing secrets, callers' webhook header values."""

    key: SecretStr | None  # SECRETS_KEY

    def fernet_keys(self) -> tuple[str, ...]:
        """SECRETS_KEY's Fernet keys, first (encrypting) first; () when unset."""
        return parse_keys(self.key.get_secret_value() if self.key else None)


class RelayUrlSettings(_Part):
    """Where the service may send callers' webhooks (app/core/ssrf.py)."""

    allow_private_networks: bool  # RELAY_ALLOW_PRIVATE_NETWORKS
    allowed_hosts: tuple[str, ...]  # RELAY_ALLOWED_HOSTS, lower-cased; empty = any public host


class WebhookSettings(_Part):
    """app/webhooks: AssemblyAI's webhooks in, callers' webhooks out, live status (SSE)."""

    max_body_bytes: int  # WEBHOOK_MAX_BODY_BYTES
    pool_size: int  # WEBHOOK_POOL_SIZE
    database_connect_timeout_s: float  # DATABASE_CONNECT_TIMEOUT_S: the receiver's pool
    sse_heartbeat_s: float  # SSE_HEARTBEAT_S
    sse_final_grace_s: float  # SSE_FINAL_GRACE_S
    signing_secret_grace_s: float  # RELAY_SIGNING_SECRET_GRACE_S
    relay_schedule: tuple[float, ...]  # RELAY_RETRY_SCHEDULE_S
    relay_timeout_s: float  # RELAY_TIMEOUT_S
    lease_s: float  # RECONCILER_LEASE_S: a claimed delivery's lease
    relay_urls: RelayUrlSettings
    secrets: SecretsSettings  # seals the stored signing secrets and relay header values


class UploadSettings(_Part):
    """app/uploads: request bodies streamed upstream."""

    max_bytes: int  # MAX_UPLOAD_BYTES
    chunk_bytes: int  # UPLOAD_CHUNK_BYTES
    relay_buffer_bytes: int  # UPLOAD_RELAY_BUFFER_BYTES


class TranscriptSettings(_Part):
    """app/transcripts: submits under policy, and the search for a submit whose answer was
    lost (run by a retried submit or by the reconciler)."""

    default_speech_models: tuple[str, ...]  # DEFAULT_SPEECH_MODELS
    public_base_url: str | None  # PUBLIC_BASE_URL: the webhook_url given upstream (none: none)
    idempotency_wait_s: float  # IDEMPOTENCY_WAIT_S
    poll_initial_delay_s: float  # POLL_INITIAL_DELAY_S: a submitted job's first check
    relay_urls: RelayUrlSettings  # a caller's webhook_url is checked at submit
    secrets: SecretsSettings  # seals a caller's webhook header value
    uploads: UploadSettings  # upload-and-submit reads the file's body


class ReconcilerSettings(_Part):
    """app/webhooks' reconciler: due jobs polled, lost and orphaned submits (RECONCILER_*)."""

    lease_s: float  # RECONCILER_LEASE_S
    tick_s: float  # RECONCILER_TICK_S
    poll_schedule: tuple[float, ...]  # RECONCILER_POLL_SCHEDULE_S
    error_backoff: tuple[float, ...]  # RECONCILER_ERROR_BACKOFF_S
    submit_orphan_after_s: float  # SUBMIT_ORPHAN_AFTER_S
    # How long a submit may still be running: UPSTREAM_TIMEOUT_S per UPSTREAM_RETRY_ATTEMPTS.
    upstream_timeout_s: float
    upstream_retry_attempts: int
    transcripts: TranscriptSettings  # a lost submit is adopted as the submit would have


class MetricsSettings(_Part):
    """app/metrics: the Prometheus endpoint (METRICS_ENABLED is wiring: app/main.py, app/cli.py)."""

    token: SecretStr | None  # METRICS_TOKEN
    port: int | None  # METRICS_PORT
    host: str  # METRICS_HOST
    environment: Environment  # APP_ENV: an unprotected /metrics in production is warned of
    llm_daily_token_budget: int  # LLM_DAILY_TOKEN_BUDGET: reported next to the usage


class RelaySettings(_Part):
    """app/relay: live sessions (/v3/ws, /v1/ws) relayed through the service (WS_RELAY_*)."""

    key_max_sessions: int
    end_user_max_sessions: int
    max_session_s: int
    budget_slice_s: int
    token_max_expires_in_s: int
    allowed_params: tuple[str, ...]
    speech_models: tuple[str, ...]
    stall_timeout_s: float
    queue_messages: int
    max_message_bytes: int
    terminate_wait_s: float
    connect_timeout_s: float
    redis_url: SecretStr | None  # REDIS_URL: relay tokens and session counts across instances
    rate_limit_key_prefix: str  # RATE_LIMIT_KEY_PREFIX
    key_cache_ttl_s: float  # KEY_CACHE_TTL_S: how long a key's agent policy is cached
    upstream_key: SecretStr  # ASSEMBLYAI_API_KEY, or the emulator's
    streaming_ws_url: str  # upstream's /v3/ws
    agents_ws_url: str  # upstream's /v1/ws
    identity: IdentitySettings  # cookie callers: the Origin rule; PUBLIC_BASE_URL
    upstream_ca_file: str | None  # UPSTREAM_CA_FILE, for a wss:// upstream


class UpstreamSettings(_Part):
    """app/upstream: the AssemblyAI client (UPSTREAM_*, the hosts, the key)."""

    key: SecretStr  # ASSEMBLYAI_API_KEY, or EMULATOR_API_KEY when none is set
    transport: Literal["aiohttp", "httpx"]
    connect_timeout_s: float
    timeout_s: float
    max_connections: int
    keepalive_s: float
    retry_attempts: int
    retry_wait_initial_s: float
    retry_wait_max_s: float
    retry_after_max_s: float
    rest_base_url: str  # from ASSEMBLYAI_REGION or ASSEMBLYAI_API_BASE_URL; so are the rest
    llm_base_url: str
    streaming_base_url: str
    agents_base_url: str
    ca_file: str | None  # UPSTREAM_CA_FILE: CAs trusted besides certifi's


class WebSettings(_Part):
    """app/web: what the browser client is told (`GET /api/client-config`)."""

    stt_sample_rate: int  # TOKEN_STREAMING_SAMPLE_RATE
    frame_ms: int  # BROWSER_FRAME_MS
    embed_origins: tuple[str, ...]  # CORS_ORIGINS
    max_upload_bytes: int  # MAX_UPLOAD_BYTES
    uses_emulator: bool  # no ASSEMBLYAI_API_KEY
    live_mode: Literal["token", "relay"]  # BROWSER_LIVE_MODE


# The properties of `Settings` that build a part (dropped from a copy, which rebuilds them).
PARTS = (
    "llm",
    "identity",
    "tokens",
    "relay_urls",
    "secrets",
    "webhooks",
    "metrics",
    "relay",
    "uploads",
    "transcripts",
    "reconciler",
    "upstream",
    "web",
)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    environment: Environment = Field("development", validation_alias="APP_ENV")

    # --- AssemblyAI -------------------------------------------------------------------------
    assemblyai_api_key: SecretStr | None = None
    assemblyai_region: Region = "us"
    # Edge routing is AssemblyAI's default; EU deployments get the EU host unless told otherwise.
    assemblyai_streaming_region: StreamingRegion | None = None
    assemblyai_api_base_url: str | None = None
    assemblyai_streaming_base_url: str | None = None
    assemblyai_agents_base_url: str | None = None
    assemblyai_llm_base_url: str | None = None

    # --- Service ----------------------------------------------------------------------------
    database_url: SecretStr | None = None
    embedded_postgres_dir: Path = Path(".data/postgres")
    migrate_on_start: bool = True
    # Connections of the request/reconciler engine per process: pool plus overflow. Keep the
    # sum over every instance (plus WEBHOOK_POOL_SIZE and two listeners each) under Postgres's
    # max_connections.
    database_pool_size: int = Field(10, ge=1, le=200)
    database_max_overflow: int = Field(20, ge=0, le=200)
    # Bounds on waiting for the database, so that an unreachable one answers 503 fast.
    database_connect_timeout_s: float = Field(5.0, gt=0)
    database_pool_timeout_s: float = Field(5.0, gt=0)
    public_base_url: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    log_level: str = "INFO"
    log_json: bool | None = None  # default: JSON outside development
    # One line per request; at thousands of token mints per second it costs ~0.05 ms each.
    access_log: bool = True
    # A client's request headers must be complete this long after their first byte (or
    # after connecting); a body the service waits for may pause this long (408, closed).
    request_header_timeout_s: float = Field(10.0, gt=0)
    request_body_idle_timeout_s: float = Field(30.0, gt=0)
    redis_url: SecretStr | None = None
    # Stop the embedded Postgres `serve` started when it exits (`--keep-db` keeps it).
    embedded_postgres_keep: bool = False

    # --- Metrics (Prometheus, `/metrics`) ----------------------------------------------------
    metrics_enabled: bool = True
    # When set, scrapes must send `Authorization: Bearer <token>`.
    metrics_token: SecretStr | None = None
    # When set, /metrics is served on this port only (every worker shares it), not on PORT.
    metrics_port: int | None = Field(None, ge=1, le=65535)
    metrics_host: str = "127.0.0.1"

    # --- Emulator (used when no AssemblyAI key is configured) -------------------------------
    emulator_port: int = Field(8010, ge=0, le=65535)
    emulator_api_key: SecretStr = SecretStr("emulator-key")

    # --- Upstream HTTP ----------------------------------------------------------------------
    upstream_transport: Literal["aiohttp", "httpx"] = "aiohttp"
    upstream_connect_timeout_s: float = Field(5.0, gt=0)
    upstream_timeout_s: float = Field(30.0, gt=0)
    upstream_max_connections: int = Field(200, ge=1)
    # Idle seconds a pooled upstream connection is kept. Must be below the upstream's own
    # idle timeout (uvicorn, the emulator: 5 s), or a submit (never retried) can be sent on
    # a connection the server is closing and fail with 502.
    upstream_keepalive_s: float = Field(4.0, gt=0)
    upstream_retry_attempts: int = Field(4, ge=1, le=10)
    upstream_retry_wait_initial_s: float = Field(0.2, ge=0)
    upstream_retry_wait_max_s: float = Field(5.0, ge=0)
    upstream_retry_after_max_s: float = Field(30.0, ge=0)
    # A PEM file of CA certificates trusted for the upstream hosts besides certifi's bundle
    # (a test CA, a TLS-inspecting egress proxy). Unset: certifi's bundle alone.
    upstream_ca_file: str | None = None

    # --- Limits -----------------------------------------------------------------------------
    max_upload_bytes: int = Field(UPSTREAM_MAX_UPLOAD_BYTES, ge=1)

    # --- Transcription jobs (app/uploads, app/transcripts) ----------------------------------
    # Upload bodies are handed upstream in chunks of at least this size (small client reads
    # are coalesced; larger ones pass as they are). 128 KiB: bench/upload_throughput.py
    # measured 1 MiB at ~35 % more CPU per GiB and 6 MB more RSS (copies, page faults).
    upload_chunk_bytes: int = Field(128 * 1024, ge=4096, le=16 * 1024 * 1024)
    # With the server's body tap (`aai-proxy serve`: app/core/http_server.py), a raw body of
    # known length is read off the socket into one buffer of this size per upload and
    # written upstream from it, with no copy: 1 MiB measured the least CPU per GiB.
    upload_relay_buffer_bytes: int = Field(1024 * 1024, ge=16 * 1024, le=16 * 1024 * 1024)
    # Used when a submit names no speech_models (an ordered fallback list).
    # JSON list or comma-separated in the environment.
    default_speech_models: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["universal-3-pro", "universal-2"]
    )
    # The reconciler's first poll of a job whose webhook has not come.
    poll_initial_delay_s: float = Field(5.0, ge=0)
    # How long a submit with a busy Idempotency-Key waits for the first request's outcome.
    idempotency_wait_s: float = Field(30.0, ge=0)

    @field_validator("default_speech_models", mode="before")
    @classmethod
    def _speech_model_list(cls, value: object) -> object:
        return _env_list(value, empty=[])

    @field_validator("default_speech_models")
    @classmethod
    def _speech_models_not_empty(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("DEFAULT_SPEECH_MODELS must name at least one speech model")
        return value

    # --- LLM Gateway (app/llm) --------------------------------------------------------------
    # Exact model IDs callers may use; unset = the region's list (LLM_MODELS_BY_REGION).
    # JSON list or comma-separated in the environment.
    llm_models: Annotated[list[str] | None, NoDecode] = None
    llm_max_tokens: int = Field(4000, ge=1)  # cap on a request's max_tokens
    # A chat request body larger than this is refused (413) before it is read whole.
    llm_max_request_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    llm_daily_token_budget: int = Field(1_000_000, ge=0)  # per key per UTC day; 0 = unlimited
    llm_reservation_ttl_s: float = Field(900.0, gt=0)  # a crashed call's hold expires
    llm_timeout_s: float = Field(120.0, gt=0)  # one completion, read timeout
    llm_summary_model: str = "claude-sonnet-4-6"
    llm_summary_max_tokens: int = Field(1500, ge=1)
    llm_summary_chunk_chars: int = Field(60_000, ge=1000)  # longer transcripts: map-reduce
    llm_chapter_chars: int = Field(4000, ge=200)  # paragraphs grouped into ~this per chapter
    llm_summary_lease_s: float = Field(300.0, gt=0)
    llm_summary_concurrency: int = Field(4, ge=1)
    llm_summary_max_attempts: int = Field(5, ge=1)

    @field_validator("llm_models", mode="before")
    @classmethod
    def _model_list(cls, value: object) -> object:
        return _env_list(value, empty=None)

    @model_validator(mode="after")
    def _llm_coherent(self) -> Settings:
        if self.llm_models is not None and self.assemblyai_region == "eu":
            foreign = [m for m in self.llm_models if not m.startswith(EU_LLM_MODEL_PREFIXES)]
            if foreign:
                raise ValueError(
                    f"LLM_MODELS lists {', '.join(foreign)}, which the EU LLM Gateway does not "
                    "serve (Anthropic and Google models only)"
                )
        if self.llm_summary_model not in self.llm_allowed_models:
            raise ValueError(
                f"LLM_SUMMARY_MODEL={self.llm_summary_model} is not an allowed model here; "
                f"valid: {', '.join(self.llm_allowed_models)}"
            )
        return self

    # --- Temporary tokens, sessions, CORS (app/tokens, app/sessions) -----------------------
    # Policy maxima: requested lifetimes are clamped to these (per-key overrides may lower or
    # raise them within upstream's 1-600 s and 60-10800 s).
    token_max_expires_in_s: int = Field(60, ge=1, le=600)
    token_max_session_s: int = Field(3600, ge=60, le=10800)
    # Rate limits (0 = no limit): mints per minute, and granted session-seconds per UTC day.
    token_key_mints_per_minute: int = Field(120, ge=0)
    token_end_user_mints_per_minute: int = Field(10, ge=0)
    token_key_daily_session_s: int = Field(360_000, ge=0)
    token_end_user_daily_session_s: int = Field(14_400, ge=0)
    # Redis unreachable: refuse (503) unless this is true.
    token_limits_fail_open: bool = False
    rate_limit_key_prefix: str = "aaip"
    # Defaults put into the websocket_url handed to browsers.
    token_streaming_sample_rate: int = Field(16000, ge=8000, le=48000)
    token_streaming_encoding: Literal["pcm_s16le", "pcm_mulaw"] = "pcm_s16le"
    token_streaming_speech_model: str = "u3-rt-pro"
    # How long a key lookup is cached in-process (revocation takes effect within this).
    key_cache_ttl_s: float = Field(5.0, ge=0)
    # Browser origins allowed by CORS and by the Origin check on cookie-authenticated writes.
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Peers (addresses, networks, or `*`) whose X-Forwarded-For/-Proto are believed.
    forwarded_allow_ips: str = "127.0.0.1,::1"
    session_cookie_name: str = "aaip_session"
    session_ttl_s: int = Field(8 * 3600, ge=60)
    # None = Secure when the request (or PUBLIC_BASE_URL) is https.
    session_cookie_secure: bool | None = None
    # JWTs from the app's own identity provider: HS256 secret or a JWKS URL (RS256/ES256).
    jwt_hs256_secret: SecretStr | None = None
    jwt_jwks_url: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_key_id: str | None = None  # the proxy key whose scopes and limits a JWT caller gets
    jwt_leeway_s: int = Field(30, ge=0)
    jwks_cache_ttl_s: int = Field(300, ge=1)

    # --- Webhooks, reconciler, relay, live status (app/webhooks) ----------------------------
    webhook_max_body_bytes: int = Field(16_384, ge=256)
    # Connections of the receiver's own pool (one statement per delivery, no ORM).
    webhook_pool_size: int = Field(10, ge=1, le=100)
    reconciler_enabled: bool = True
    reconciler_tick_s: float = Field(1.0, gt=0)
    reconciler_batch_size: int = Field(20, ge=1, le=500)
    reconciler_concurrency: int = Field(8, ge=1, le=200)
    reconciler_lease_s: float = Field(60.0, gt=0)
    # A job still "submitting" this long after its row was committed, with no upstream id
    # and no webhook, lost its submitting process: it is failed (a later webhook adopts
    # it). Never sooner than the submit itself could still be running.
    submit_orphan_after_s: float = Field(600.0, gt=0)
    # Seconds between polls of a job whose webhook has not come, by attempt (last repeats).
    reconciler_poll_schedule_s: str = "5,10,20,30,60"
    # Seconds before retrying a job whose upstream fetch failed, by consecutive failure.
    reconciler_error_backoff_s: str = "2,5,15,60,300"
    relay_retry_schedule_s: str = "5,300,1800,7200,18000,36000"
    relay_timeout_s: float = Field(10.0, gt=0)
    relay_allow_private_networks: bool = False
    relay_allowed_hosts: str = ""
    relay_signing_secret_grace_s: float = Field(86_400.0, ge=0)
    # Fernet keys (comma-separated; the first encrypts, all decrypt) sealing the secrets
    # stored readable: relay signing secrets, callers' relay header values. Required in
    # production; unset elsewhere means a fixed development key (app/core/secretbox.py).
    secrets_key: SecretStr | None = None
    sse_heartbeat_s: float = Field(15.0, gt=0)
    sse_final_grace_s: float = Field(30.0, ge=0)

    # --- Live relay: /v3/ws and /v1/ws through the service (app/relay) -------------------
    # Open relayed sessions at once per key and per end user of a key (0 = no limit);
    # counted in Redis across instances when REDIS_URL is set.
    ws_relay_key_max_sessions: int = Field(20, ge=0)
    ws_relay_end_user_max_sessions: int = Field(2, ge=0)
    # Cap on a relayed session's length; 0 = the key's token policy maximum (TOKEN_MAX_SESSION_S
    # or its per-key override). A relay token's max_session_duration_seconds can lower it.
    ws_relay_max_session_s: int = Field(0, ge=0, le=10800)
    # Session-seconds are charged to the daily budget in slices of this many seconds, ahead
    # of use; the unused part of the last slice is given back when the session ends.
    ws_relay_budget_slice_s: int = Field(10, ge=1, le=600)
    # Longest lifetime of a relay token (`?token=`); requests above are clamped.
    ws_relay_token_max_expires_in_s: int = Field(60, ge=1, le=600)
    # Query parameters a client may send on /v3/ws (others: close 3006 before upstream).
    ws_relay_allowed_params: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(RELAY_DEFAULT_PARAMS)
    )
    # `speech_model` values allowed on /v3/ws; empty = any.
    ws_relay_speech_models: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # A client that takes nothing for this long while messages wait for it is closed (4408).
    ws_relay_stall_timeout_s: float = Field(10.0, gt=0)
    # Messages buffered per direction (each at most WS_RELAY_MAX_MESSAGE_BYTES).
    ws_relay_queue_messages: int = Field(16, ge=1, le=1024)
    ws_relay_max_message_bytes: int = Field(1024 * 1024, ge=1024, le=16 * 1024 * 1024)
    # After the relay sends Terminate (client gone, budget or cap), how long it waits for
    # upstream's Termination before closing upstream itself.
    ws_relay_terminate_wait_s: float = Field(5.0, gt=0)
    ws_relay_connect_timeout_s: float = Field(10.0, gt=0)
    # The browser client's live and agent views: "token" (direct to AssemblyAI with a
    # temporary token) or "relay" (through this service's /v3/ws and /v1/ws).
    browser_live_mode: Literal["token", "relay"] = "token"

    @field_validator("ws_relay_allowed_params", "ws_relay_speech_models", mode="before")
    @classmethod
    def _relay_lists(cls, value: object) -> object:
        return _env_list(value, empty=[])

    # --- Browser client (static/, app/web) --------------------------------------------------
    browser_client_enabled: bool = True
    # Length of each audio frame the browser sends (streaming STT accepts 50-1000 ms).
    browser_frame_ms: int = Field(100, ge=50, le=1000)

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @field_validator(
        "public_base_url",
        "assemblyai_api_base_url",
        "assemblyai_streaming_base_url",
        "assemblyai_agents_base_url",
        "assemblyai_llm_base_url",
    )
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ValueError(f"must be an http(s) URL with a host, got {value!r}")
        return value.rstrip("/")

    @field_validator("upstream_ca_file")
    @classmethod
    def _ca_file(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not Path(value).is_file():
            raise ValueError(f"must be a readable PEM file, got {value!r}")
        return value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _origins(cls, value: object) -> object:
        # JSON list or comma-separated; an origin is scheme://host[:port], no path.
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list):
            origins = []
            for origin in value:
                parts = urlsplit(str(origin))
                if parts.scheme not in {"http", "https"} or not parts.netloc or parts.path:
                    raise ValueError(
                        f"CORS_ORIGINS entries must be scheme://host[:port], got {origin!r}"
                    )
                origins.append(f"{parts.scheme}://{parts.netloc}")
            return origins
        return value

    @model_validator(mode="after")
    def _jwt_coherent(self) -> Settings:
        if self.jwt_hs256_secret is None and self.jwt_jwks_url is None:
            return self
        if self.jwt_hs256_secret is not None and self.jwt_jwks_url is not None:
            raise ValueError("set either JWT_HS256_SECRET or JWT_JWKS_URL, not both")
        secret = self.jwt_hs256_secret.get_secret_value() if self.jwt_hs256_secret else None
        if secret is not None and (len(secret) < 32 or secret in PLACEHOLDER_SECRETS):
            raise ValueError(
                "JWT_HS256_SECRET must be at least 32 characters and not a placeholder"
            )
        missing = [
            name
            for name, value in (
                ("JWT_ISSUER", self.jwt_issuer),
                ("JWT_AUDIENCE", self.jwt_audience),
                ("JWT_KEY_ID", self.jwt_key_id),
            )
            if not value
        ]
        if missing:
            raise ValueError(f"JWT authentication is configured but {', '.join(missing)} is unset")
        return self

    @field_validator(
        "reconciler_poll_schedule_s", "reconciler_error_backoff_s", "relay_retry_schedule_s"
    )
    @classmethod
    def _schedule(cls, value: str) -> str:
        try:
            steps = [float(v) for v in value.split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"must be comma-separated seconds, got {value!r}") from None
        if not steps or any(s < 0 for s in steps):
            raise ValueError(f"must be one or more non-negative seconds, got {value!r}")
        return value

    @model_validator(mode="after")
    def _coherent(self) -> Settings:
        key = self.assemblyai_api_key.get_secret_value() if self.assemblyai_api_key else None
        if key is not None and key.strip() == "":
            raise ValueError("ASSEMBLYAI_API_KEY is set but empty; unset it to use the emulator")
        if key and key.lower().startswith("bearer "):
            raise ValueError(
                "ASSEMBLYAI_API_KEY must be the raw key without a 'Bearer ' prefix; "
                "the service adds Bearer itself where the Voice Agent needs it"
            )
        if self.environment == "production":
            if key is None:
                raise ValueError("ASSEMBLYAI_API_KEY is required when APP_ENV=production")
            if key in PLACEHOLDER_SECRETS:
                raise ValueError("ASSEMBLYAI_API_KEY is a placeholder value; set the real key")
            if self.database_url is None:
                raise ValueError("DATABASE_URL is required when APP_ENV=production")
            if not self.secrets_keys():  # unset, or blank (`SECRETS_KEY=`): no key at all
                raise ValueError("SECRETS_KEY is required when APP_ENV=production")
            if DEVELOPMENT_KEY in self.secrets_keys():
                raise ValueError("SECRETS_KEY holds the public development key; make a real one")
        if self.assemblyai_region == "eu" and self.assemblyai_streaming_region in ("us", "edge"):
            raise ValueError(
                "ASSEMBLYAI_STREAMING_REGION="
                f"{self.assemblyai_streaming_region} contradicts ASSEMBLYAI_REGION=eu: "
                "EU data residency needs the EU streaming host"
            )
        if self.max_upload_bytes > UPSTREAM_MAX_UPLOAD_BYTES:
            raise ValueError(
                f"MAX_UPLOAD_BYTES={self.max_upload_bytes} exceeds AssemblyAI's upload limit "
                f"of {UPSTREAM_MAX_UPLOAD_BYTES} bytes"
            )
        if self.upstream_retry_wait_max_s < self.upstream_retry_wait_initial_s:
            raise ValueError(
                "UPSTREAM_RETRY_WAIT_MAX_S must be at least UPSTREAM_RETRY_WAIT_INITIAL_S"
            )
        self.secrets_keys()  # each must be a Fernet key
        if self.database_url is not None:
            scheme = urlsplit(self.database_url.get_secret_value()).scheme
            if scheme not in {"postgres", "postgresql", "postgresql+asyncpg"}:
                raise ValueError(
                    "DATABASE_URL must be a postgresql:// URL; aai-proxy supports Postgres only"
                )
        return self

    # --- Each feature's part (see LlmSettings above) ---------------------------------------
    @cached_property
    def llm(self) -> LlmSettings:
        return LlmSettings(
            region=self.assemblyai_region,
            allowed_models=self.llm_allowed_models,
            max_tokens=self.llm_max_tokens,
            max_request_bytes=self.llm_max_request_bytes,
            daily_token_budget=self.llm_daily_token_budget,
            reservation_ttl_s=self.llm_reservation_ttl_s,
            timeout_s=self.llm_timeout_s,
            summary_model=self.llm_summary_model,
            summary_max_tokens=self.llm_summary_max_tokens,
            summary_chunk_chars=self.llm_summary_chunk_chars,
            chapter_chars=self.llm_chapter_chars,
            summary_lease_s=self.llm_summary_lease_s,
            summary_concurrency=self.llm_summary_concurrency,
            summary_max_attempts=self.llm_summary_max_attempts,
        )

    @cached_property
    def identity(self) -> IdentitySettings:
        jwt = None
        if self.jwt_hs256_secret is not None or self.jwt_jwks_url is not None:
            # _jwt_coherent refused a configuration without all three.
            assert self.jwt_issuer
            assert self.jwt_audience
            assert self.jwt_key_id
            jwt = JwtSettings(
                hs256_secret=self.jwt_hs256_secret,
                jwks_url=self.jwt_jwks_url,
                issuer=self.jwt_issuer,
                audience=self.jwt_audience,
                key_id=self.jwt_key_id,
                leeway_s=self.jwt_leeway_s,
                jwks_cache_ttl_s=self.jwks_cache_ttl_s,
            )
        return IdentitySettings(
            key_cache_ttl_s=self.key_cache_ttl_s,
            public_base_url=self.public_base_url,
            cors_origins=tuple(self.cors_origins),
            session_cookie_name=self.session_cookie_name,
            session_ttl_s=self.session_ttl_s,
            session_cookie_secure=self.session_cookie_secure,
            jwt=jwt,
        )

    @cached_property
    def tokens(self) -> TokenSettings:
        return TokenSettings(
            max_expires_in_s=self.token_max_expires_in_s,
            max_session_s=self.token_max_session_s,
            key_mints_per_minute=self.token_key_mints_per_minute,
            end_user_mints_per_minute=self.token_end_user_mints_per_minute,
            key_daily_session_s=self.token_key_daily_session_s,
            end_user_daily_session_s=self.token_end_user_daily_session_s,
            limits_fail_open=self.token_limits_fail_open,
            redis_url=self.redis_url,
            rate_limit_key_prefix=self.rate_limit_key_prefix,
            key_cache_ttl_s=self.key_cache_ttl_s,
            database_connect_timeout_s=self.database_connect_timeout_s,
            streaming_sample_rate=self.token_streaming_sample_rate,
            streaming_encoding=self.token_streaming_encoding,
            streaming_speech_model=self.token_streaming_speech_model,
            streaming_ws_url=self.streaming_ws_url,
            agents_ws_url=self.agents_ws_url,
            identity=self.identity,
            relay_key_max_sessions=self.ws_relay_key_max_sessions,
            relay_end_user_max_sessions=self.ws_relay_end_user_max_sessions,
        )

    @cached_property
    def relay_urls(self) -> RelayUrlSettings:
        return RelayUrlSettings(
            allow_private_networks=self.relay_allow_private_networks,
            allowed_hosts=tuple(self.relay_host_allowlist),
        )

    @cached_property
    def secrets(self) -> SecretsSettings:
        return SecretsSettings(key=self.secrets_key)

    @cached_property
    def webhooks(self) -> WebhookSettings:
        return WebhookSettings(
            max_body_bytes=self.webhook_max_body_bytes,
            pool_size=self.webhook_pool_size,
            database_connect_timeout_s=self.database_connect_timeout_s,
            sse_heartbeat_s=self.sse_heartbeat_s,
            sse_final_grace_s=self.sse_final_grace_s,
            signing_secret_grace_s=self.relay_signing_secret_grace_s,
            relay_schedule=tuple(self.relay_schedule),
            relay_timeout_s=self.relay_timeout_s,
            lease_s=self.reconciler_lease_s,
            relay_urls=self.relay_urls,
            secrets=self.secrets,
        )

    @cached_property
    def metrics(self) -> MetricsSettings:
        return MetricsSettings(
            token=self.metrics_token,
            port=self.metrics_port,
            host=self.metrics_host,
            environment=self.environment,
            llm_daily_token_budget=self.llm_daily_token_budget,
        )

    @cached_property
    def relay(self) -> RelaySettings:
        return RelaySettings(
            key_max_sessions=self.ws_relay_key_max_sessions,
            end_user_max_sessions=self.ws_relay_end_user_max_sessions,
            max_session_s=self.ws_relay_max_session_s,
            budget_slice_s=self.ws_relay_budget_slice_s,
            token_max_expires_in_s=self.ws_relay_token_max_expires_in_s,
            allowed_params=tuple(self.ws_relay_allowed_params),
            speech_models=tuple(self.ws_relay_speech_models),
            stall_timeout_s=self.ws_relay_stall_timeout_s,
            queue_messages=self.ws_relay_queue_messages,
            max_message_bytes=self.ws_relay_max_message_bytes,
            terminate_wait_s=self.ws_relay_terminate_wait_s,
            connect_timeout_s=self.ws_relay_connect_timeout_s,
            redis_url=self.redis_url,
            rate_limit_key_prefix=self.rate_limit_key_prefix,
            key_cache_ttl_s=self.key_cache_ttl_s,
            upstream_key=SecretStr(self.upstream_key()),
            streaming_ws_url=self.streaming_ws_url,
            agents_ws_url=self.agents_ws_url,
            identity=self.identity,
            upstream_ca_file=self.upstream_ca_file,
        )

    @cached_property
    def uploads(self) -> UploadSettings:
        return UploadSettings(
            max_bytes=self.max_upload_bytes,
            chunk_bytes=self.upload_chunk_bytes,
            relay_buffer_bytes=self.upload_relay_buffer_bytes,
        )

    @cached_property
    def transcripts(self) -> TranscriptSettings:
        return TranscriptSettings(
            default_speech_models=tuple(self.default_speech_models),
            public_base_url=self.public_base_url,
            idempotency_wait_s=self.idempotency_wait_s,
            poll_initial_delay_s=self.poll_initial_delay_s,
            relay_urls=self.relay_urls,
            secrets=self.secrets,
            uploads=self.uploads,
        )

    @cached_property
    def reconciler(self) -> ReconcilerSettings:
        return ReconcilerSettings(
            lease_s=self.reconciler_lease_s,
            tick_s=self.reconciler_tick_s,
            poll_schedule=tuple(self.poll_schedule),
            error_backoff=tuple(self.error_backoff),
            submit_orphan_after_s=self.submit_orphan_after_s,
            upstream_timeout_s=self.upstream_timeout_s,
            upstream_retry_attempts=self.upstream_retry_attempts,
            transcripts=self.transcripts,
        )

    @cached_property
    def upstream(self) -> UpstreamSettings:
        return UpstreamSettings(
            key=SecretStr(self.upstream_key()),
            transport=self.upstream_transport,
            connect_timeout_s=self.upstream_connect_timeout_s,
            timeout_s=self.upstream_timeout_s,
            max_connections=self.upstream_max_connections,
            keepalive_s=self.upstream_keepalive_s,
            retry_attempts=self.upstream_retry_attempts,
            retry_wait_initial_s=self.upstream_retry_wait_initial_s,
            retry_wait_max_s=self.upstream_retry_wait_max_s,
            retry_after_max_s=self.upstream_retry_after_max_s,
            rest_base_url=self.rest_base_url,
            llm_base_url=self.llm_base_url,
            streaming_base_url=self.streaming_base_url,
            agents_base_url=self.agents_base_url,
            ca_file=self.upstream_ca_file,
        )

    @cached_property
    def web(self) -> WebSettings:
        return WebSettings(
            stt_sample_rate=self.token_streaming_sample_rate,
            frame_ms=self.browser_frame_ms,
            embed_origins=tuple(self.cors_origins),
            max_upload_bytes=self.max_upload_bytes,
            uses_emulator=self.uses_emulator,
            live_mode=self.browser_live_mode,
        )

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy whose parts are built afresh from its own values."""
        copied = super().model_copy(update=update, deep=deep)
        for name in PARTS:
            copied.__dict__.pop(name, None)
        return copied

    # --- Derived ----------------------------------------------------------------------------
    @property
    def uses_emulator(self) -> bool:
        return self.assemblyai_api_key is None

    @property
    def streaming_region(self) -> StreamingRegion:
        if self.assemblyai_streaming_region is not None:
            return self.assemblyai_streaming_region
        return "eu" if self.assemblyai_region == "eu" else "edge"

    @property
    def rest_base_url(self) -> str:
        return self.assemblyai_api_base_url or REST_HOSTS[self.assemblyai_region]

    @property
    def llm_base_url(self) -> str:
        return self.assemblyai_llm_base_url or LLM_HOSTS[self.assemblyai_region]

    @property
    def streaming_base_url(self) -> str:
        return self.assemblyai_streaming_base_url or STREAMING_HOSTS[self.streaming_region]

    @property
    def agents_base_url(self) -> str:
        return self.assemblyai_agents_base_url or AGENTS_HOST

    @property
    def llm_allowed_models(self) -> tuple[str, ...]:
        if self.llm_models is not None:
            return tuple(self.llm_models)
        return LLM_MODELS_BY_REGION[self.assemblyai_region]

    @property
    def streaming_ws_url(self) -> str:
        """The WebSocket endpoint browsers open with a temporary token."""
        return _ws(self.streaming_base_url) + "/v3/ws"

    @property
    def agents_ws_url(self) -> str:
        return _ws(self.agents_base_url) + "/v1/ws"

    @staticmethod
    def _steps(value: str) -> list[float]:
        return [float(v) for v in value.split(",") if v.strip()]

    @property
    def poll_schedule(self) -> list[float]:
        return self._steps(self.reconciler_poll_schedule_s)

    @property
    def error_backoff(self) -> list[float]:
        return self._steps(self.reconciler_error_backoff_s)

    @property
    def relay_schedule(self) -> list[float]:
        return self._steps(self.relay_retry_schedule_s)

    @property
    def relay_host_allowlist(self) -> list[str]:
        return [h.strip().lower() for h in self.relay_allowed_hosts.split(",") if h.strip()]

    @property
    def json_logs(self) -> bool:
        return self.log_json if self.log_json is not None else self.environment != "development"

    def secrets_keys(self) -> tuple[str, ...]:
        """SECRETS_KEY's Fernet keys, first (encrypting) first; () when unset."""
        return parse_keys(self.secrets_key.get_secret_value() if self.secrets_key else None)

    def secrets_key_is_public(self) -> bool:
        """Real AssemblyAI, yet the stored relay secrets are sealed (or still readable) with
        the public development key: SECRETS_KEY unset or holding it (refused in production)."""
        keys = self.secrets_keys()
        return not self.uses_emulator and (not keys or DEVELOPMENT_KEY in keys)

    def upstream_key(self) -> str:
        """The key sent upstream: the real one, or the emulator's when none is configured."""
        if self.assemblyai_api_key is not None:
            return self.assemblyai_api_key.get_secret_value()
        return self.emulator_api_key.get_secret_value()

    def secret_values(self) -> list[str]:
        """Every configured secret value, for log redaction."""
        values = [self.upstream_key()]
        if self.database_url is not None:
            password = urlsplit(self.database_url.get_secret_value()).password
            if password:
                values.append(password)
        if self.redis_url is not None:
            password = urlsplit(self.redis_url.get_secret_value()).password
            if password:
                values.append(password)
        if self.jwt_hs256_secret is not None:
            values.append(self.jwt_hs256_secret.get_secret_value())
        values.extend(self.secrets_keys())
        if self.metrics_token is not None:
            values.append(self.metrics_token.get_secret_value())
        return [v for v in values if len(v) >= 4]


def _ws(http_url: str) -> str:
    if http_url.startswith("https://"):
        return "wss://" + http_url.removeprefix("https://")
    return "ws://" + http_url.removeprefix("http://")


@lru_cache
def get_settings() -> Settings:
    return Settings()
