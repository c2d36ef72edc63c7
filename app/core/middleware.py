"""Request ids: accept a sane `X-Request-ID`, otherwise make one; echo it on every answer
(the 500 of an unhandled error included). And the base of the hot-path shortcuts."""

from __future__ import annotations

import inspect
import os
import re
import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.boundary import TrustedProxies, apply_forwarded, refusal_body, scope_refusal
from app.core.errors import AppError, unhandled_error_response
from app.core.logging import request_id_var

_VALID = re.compile(r"^[A-Za-z0-9._\-]{1,128}$")


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        incoming = None
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        request_id = _request_id(incoming)
        token = request_id_var.set(request_id)
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            # Answered here, not by Starlette's outermost ServerErrorMiddleware: out there
            # the request id is already gone and the 500 would lack it (body and header).
            if scope["type"] != "http" or started:
                raise
            response = unhandled_error_response(exc)
            await response(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)


Endpoint = Callable[[Request], Awaitable[Response]]


class Shortcut:
    """A hot path: a request that `match` claims goes straight to its endpoint (see
    `ProxyApp`). The route stays registered for everything else (and for the OpenAPI
    document); the endpoint takes only the `Request`, so nothing it needs is skipped."""

    def match(self, scope: Scope) -> Endpoint | None:
        """The endpoint for this HTTP request, or None to leave it to the router."""
        raise NotImplementedError

    def template(self, scope: Scope) -> str:
        """The route template it serves, for metrics (the path when it has no parameter)."""
        return str(scope["path"])


class ProxyApp(FastAPI):
    """The FastAPI app, with its shortcuts served before the middleware stack.

    Why: a hot request (a mint, AssemblyAI's webhook) suspends several times, and every
    resumption walks the whole coroutine chain of the request: uvicorn's proxy headers,
    FastAPI's telemetry check and body limit, CORS, the request id, Starlette's error and
    exception layers, routing and dependency solving cost as much CPU as the mint's own
    work (`bench/token_mint.py`, `bench/webhook_burst.py`). A shortcut does here what those
    layers would do for it, once: the request id (as RequestIdMiddleware), the app's own
    error handlers (an AppError) and the redacted 500 (anything else).

    A request with an `Origin` header (a browser's) is left to the full stack, so CORS is
    decided in one place (CORSMiddleware); so is one behind a `root_path`, which the
    router strips. Shortcuts bypass FastAPI's native OpenTelemetry middleware, which this
    service does not configure.
    """

    shortcuts: tuple[Shortcut, ...] = ()
    # Records a served shortcut request (route, method, status, seconds): app/metrics.
    observe: Callable[[str, str, int, float], None] | None = None
    # Peers whose X-Forwarded-For is believed (FORWARDED_ALLOW_IPS); None: nobody's.
    trusted_proxies: TrustedProxies | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            # The input boundary (app/core/boundary.py): before anything reads the request.
            if self.trusted_proxies is not None:
                apply_forwarded(scope, self.trusted_proxies)
            if (refusal := scope_refusal(scope)) is not None:
                await _refuse(refusal, scope, receive, send)
                return
        # Behind a root_path (the app's or the server's) routing is left to the router.
        if scope["type"] == "http" and not (self.root_path or scope.get("root_path")):
            endpoint = None
            for shortcut in self.shortcuts:
                if (endpoint := shortcut.match(scope)) is not None:
                    break
            if endpoint is not None:
                request_id = _request_id_or_none_for_browsers(scope)
                if request_id is not None:
                    started = time.perf_counter()
                    status = await self._shortcut(endpoint, request_id, scope, receive, send)
                    if self.observe is not None:
                        elapsed = time.perf_counter() - started
                        self.observe(shortcut.template(scope), scope["method"], status, elapsed)
                    return
        await super().__call__(scope, receive, send)

    async def _shortcut(
        self, endpoint: Endpoint, request_id: str, scope: Scope, receive: Receive, send: Send
    ) -> int:
        scope["app"] = self
        token = request_id_var.set(request_id)
        try:
            request = Request(scope, receive, send)
            response: Response
            try:
                response = await endpoint(request)
            except AppError as exc:
                handlers = self.exception_handlers
                handler = next(h for c in type(exc).__mro__ if (h := handlers.get(c)) is not None)
                answer = handler(request, exc)
                response = await answer if inspect.isawaitable(answer) else answer
            except Exception as exc:
                response = unhandled_error_response(exc)
            response.raw_headers.append((b"x-request-id", request_id.encode()))
            await response(scope, receive, send)
            return response.status_code
        finally:
            request_id_var.reset(token)


async def _refuse(detail: str, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer a request refused at the boundary: 400 (a WebSocket: closed before accept)."""
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008, "reason": detail[:120]})
        return
    incoming = None
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            incoming = value.decode("latin-1")
            break
    response = JSONResponse(refusal_body(scope["path"], detail), status_code=400)
    response.raw_headers.append((b"x-request-id", _request_id(incoming).encode()))
    await response(scope, receive, send)


def _request_id_or_none_for_browsers(scope: Scope) -> str | None:
    """The request id RequestIdMiddleware would give this request, or None when it has an
    `Origin` header (CORS applies: the full stack answers it)."""
    incoming = None
    for name, value in scope["headers"]:
        if name == b"origin":
            return None
        if name == b"x-request-id" and incoming is None:
            incoming = value.decode("latin-1")
    return _request_id(incoming)


def _request_id(incoming: str | None) -> str:
    """The caller's `X-Request-ID` when sane, otherwise 128 random bits as 32 hex digits
    (uuid4().hex's shape, without building a UUID: this runs on every request)."""
    return incoming if incoming and _VALID.match(incoming) else os.urandom(16).hex()
