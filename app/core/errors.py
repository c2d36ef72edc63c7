"""One error hierarchy, one JSON shape: `{"error": "ClassName", "detail": "..."}`."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match
from starlette.types import Scope

from app.core.db import RETRY_AFTER_S, database_unavailable
from app.core.logging import request_id_var

logger = logging.getLogger(__name__)


class AppError(Exception):
    status_code: int = 500
    message: str = "Internal error."

    def __init__(
        self,
        message: str | None = None,
        *,
        status_code: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.message = message or self.message
        if status_code is not None:
            self.status_code = status_code
        self.headers = headers or {}
        super().__init__(self.message)

    @property
    def error(self) -> str:
        return type(self).__name__

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "detail": self.message}


class BadRequest(AppError):
    status_code = 400
    message = "The request is not valid."


class Unauthorized(AppError):
    status_code = 401
    message = "A valid API key is required."

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message, headers={"WWW-Authenticate": 'Bearer realm="aai-proxy"'})


class Forbidden(AppError):
    status_code = 403
    message = "This key may not do that."


class NotFound(AppError):
    status_code = 404
    message = "Not found."


class Conflict(AppError):
    status_code = 409
    message = "Conflict."


class PayloadTooLarge(AppError):
    status_code = 413
    message = "The request body is too large."


class RateLimited(AppError):
    status_code = 429
    message = "Too many requests."

    def __init__(self, message: str | None = None, *, retry_after: float | None = None) -> None:
        headers = {}
        if retry_after is not None:
            headers["Retry-After"] = str(max(1, int(retry_after + 0.999)))
        self.retry_after = retry_after
        super().__init__(message, headers=headers)


class ServiceUnavailable(AppError):
    status_code = 503
    message = "The service is not ready."


class DatabaseUnavailable(ServiceUnavailable):
    """The database could not be reached (down, restarting, or out of connections)."""

    message = "The database is unavailable; retry shortly."


class UpstreamError(AppError):
    """AssemblyAI failed or could not be reached: not the caller's fault."""

    status_code = 502
    message = "AssemblyAI could not complete the request."


class UpstreamTimeout(UpstreamError):
    status_code = 504
    message = "AssemblyAI did not answer in time."


class UpstreamRejectedKey(UpstreamError):
    status_code = 502
    message = "Upstream rejected the service's key; check ASSEMBLYAI_API_KEY."


class UpstreamClientError(AppError):
    """AssemblyAI refused the request itself (4xx): passed on with upstream's message."""

    status_code = 400


def error_response(status_code: int, error: str, detail: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail, **extra}, status_code=status_code)


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
    return "; ".join(parts) or "The request is not valid."


_HTTP_NAMES = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    413: "PayloadTooLarge",
    415: "UnsupportedMediaType",
}


def register_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def _app_error(_: Request, exc: AppError) -> JSONResponse:
        response = JSONResponse(exc.body(), status_code=exc.status_code)
        response.headers.update(exc.headers)
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
            for e in exc.errors()
        ]
        return error_response(422, "ValidationError", _describe_validation(exc), errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        name = _HTTP_NAMES.get(exc.status_code, "HTTPError")
        response = error_response(exc.status_code, name, str(exc.detail))
        if exc.headers:
            response.headers.update(exc.headers)
        if exc.status_code == 405:
            # Starlette names the methods of the first route on the path only; a path
            # served by several routes (GET and POST /v2/transcript) allows them all.
            response.headers["Allow"] = ", ".join(allowed_methods(app, request.scope))
        return response

    @app.exception_handler(Exception)
    async def _unhandled(_: Request, exc: Exception) -> JSONResponse:
        # Reached only for errors outside RequestIdMiddleware, which answers the rest.
        return unhandled_error_response(exc)


def allowed_methods(app: FastAPI, scope: Scope) -> list[str]:
    """Every method some route serves at this request's path (routing asked per method)."""
    allowed = []
    for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"):
        probe = {**scope, "method": method}
        if any(route.matches(probe)[0] == Match.FULL for route in app.router.routes):
            allowed.append(method)
    return allowed


def unhandled_error_response(exc: BaseException) -> JSONResponse:
    """Log the error (traceback redacted) and answer 500 with the request id, no detail;
    a database that can't be reached answers 503 DatabaseUnavailable with `Retry-After`."""
    request_id = request_id_var.get()
    if isinstance(exc, ClientDisconnect):
        # Nobody reads the answer; not the service's error.
        logger.info("request.client_disconnected")
        return error_response(499, "ClientDisconnected", "The client went away.")
    if database_unavailable(exc):
        logger.warning("db.unavailable", extra={"error_type": type(exc).__name__})
        error = DatabaseUnavailable()
        response = error_response(503, error.error, error.message, request_id=request_id)
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
        return response
    logger.error(
        "request.unhandled_error",
        exc_info=exc,
        extra={"error_type": type(exc).__name__},
    )
    return error_response(
        500,
        "InternalError",
        "An unexpected error occurred; quote the request id when reporting it.",
        request_id=request_id,
    )
