"""Structured logging: stdlib `getLogger(__name__)` everywhere, rendered by structlog.

Every record, ours or a library's (uvicorn's access log included), passes through
`redact`, which removes configured secrets and anything shaped like a proxy key, so a
secret cannot reach a log line even when someone logs a header by mistake.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from contextvars import ContextVar
from typing import Any

import structlog

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

PROXY_KEY_PATTERN = re.compile(r"aaip_[A-Za-z0-9_\-]{8,}")
# Temporary tokens travel in query strings (`?token=`); access logs must not keep them.
TOKEN_QUERY_PATTERN = re.compile(r"(?i)([?&](?:token|api_key|key)=)[^&\s\"']+")
# asyncpg puts a refused parameter's value in its message ("invalid input for query
# argument $3: '<value>' (...)"), past SQLAlchemy's `hide_parameters`.
QUERY_ARGUMENT_PATTERN = re.compile(r"(invalid input for query argument \$\d+:)[^\n]*")
REDACTED = "[REDACTED]"
_SENSITIVE_FIELDS = {
    "authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "token",
    "password",
    "secret",
    "api_key",
    "webhook_auth_header_value",
    "webhook_signing_secret",
    "x-aai-proxy-webhook-secret",
    "session_hash",
    "key_hash",
    "token_hash",
    "webhook_secret_hash",
}
# Libraries whose INFO lines repeat what our own lines say (httpx: one line per upstream
# call; Alembic: its plugins and context on every migration check).
_QUIET_LOGGERS = ("httpx", "httpcore", "alembic", "aiohttp.access")
# Fields some libraries add to their records for their own formatters (uvicorn's colours).
_DROPPED_EXTRAS = {"color_message"}

# Mutable on purpose: configure_logging() sets it from the settings at start-up.
_secrets: list[str] = []


def redact_text(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    text = TOKEN_QUERY_PATTERN.sub(r"\1" + REDACTED, text)
    if "query argument" in text:
        text = QUERY_ARGUMENT_PATTERN.sub(r"\1 " + REDACTED, text)
    return PROXY_KEY_PATTERN.sub(REDACTED, text)


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, bytes):
        return redact_text(value.decode("utf-8", "replace"))
    if isinstance(value, dict):
        return {
            k: (REDACTED if str(k).lower() in _SENSITIVE_FIELDS else _redact_value(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redact_value(v) for v in value]
    return value


def redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        if key.lower() in _SENSITIVE_FIELDS:
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _redact_value(event_dict[key])
    return event_dict


def _add_request_id(
    _: Any, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    request_id = request_id_var.get()
    if request_id is not None:
        event_dict.setdefault("request_id", request_id)
    return event_dict


_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def _record_extras(
    _: Any, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Lift `extra={...}` fields of stdlib records into the event."""
    record = event_dict.get("_record")
    if record is not None:
        for key, value in vars(record).items():
            if (
                key not in _RESERVED
                and not key.startswith("_")
                and key not in event_dict
                and key not in _DROPPED_EXTRAS
            ):
                event_dict[key] = value
    return event_dict


def _render_exception_text(
    _: Any, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    # Tracebacks are formatted before redaction so that they are redacted too.
    exc = event_dict.get("exception")
    if isinstance(exc, str):
        event_dict["exception"] = redact_text(exc)
    return event_dict


def _outage_without_traceback(
    _: Any, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A database that can't be reached is one line per event (its error type), not a
    traceback: the outage is the news, and every loop that meets it would repeat it."""
    exc_info = event_dict.get("exc_info")
    # (`redact` has turned the tuple into a list by now)
    exc = exc_info[1] if isinstance(exc_info, tuple | list) else exc_info
    if isinstance(exc, BaseException):
        from app.core.db import database_unavailable

        if database_unavailable(exc):
            del event_dict["exc_info"]
            event_dict.setdefault("error_type", type(exc).__name__)
            event_dict["database"] = "unavailable"
    return event_dict


def configure_logging(level: str, json_logs: bool, secrets: Iterable[str] = ()) -> None:
    _secrets[:] = sorted({s for s in secrets if s}, key=len, reverse=True)
    shared: list[Any] = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_request_id,
        _record_extras,
        redact,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json_logs
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _outage_without_traceback,
            structlog.processors.format_exc_info,
            _render_exception_text,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Every record goes through the one handler above (and so through `redact`): loggers
    # that brought handlers of their own (uvicorn's, a library's) give them up.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", *logging.root.manager.loggerDict):
        lib_logger = logging.getLogger(name)
        own = [h for h in lib_logger.handlers if not isinstance(h, logging.NullHandler)]
        if own or name.startswith("uvicorn"):
            lib_logger.handlers[:] = []
            lib_logger.propagate = True
    for name in _QUIET_LOGGERS:
        quiet = logging.getLogger(name)
        if quiet.level == logging.NOTSET or quiet.level < logging.WARNING:
            quiet.setLevel(logging.WARNING)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
