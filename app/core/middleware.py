"""Request ids: accept a sane `X-Request-ID`, otherwise make one; echo it on every answer
(the 500 of an unhandled error included). And the base of the hot-path shortcuts."""

from __future__ import annotations

import os
import re
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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
        # 128 random bits as 32 hex digits (uuid4().hex's shape, without building a UUID:
        # this runs on every request).
        request_id = incoming if incoming and _VALID.match(incoming) else os.urandom(16).hex()
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


class ShortcutMiddleware:
    """ASGI middleware, innermost: a request that `match` claims goes straight to its
    endpoint, past FastAPI's routing, dependency solving and exception layers (the hot
    paths measured by bench/token_mint.py and bench/webhook_burst.py). The routes stay
    registered for everything else; RequestIdMiddleware and CORS still wrap the call, and
    an AppError is answered by the app's own registered handler.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def match(self, scope: Scope) -> Endpoint | None:
        """The endpoint for this HTTP request, or None to leave it to the router."""
        raise NotImplementedError

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = None
        # Behind a root_path, routing is left to the router (which strips it).
        if scope["type"] == "http" and not scope.get("root_path"):
            endpoint = self.match(scope)
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive, send)
        response: Response
        try:
            response = await endpoint(request)
        except AppError as exc:
            handlers = request.app.exception_handlers
            handler = next(h for c in type(exc).__mro__ if (h := handlers.get(c)) is not None)
            response = await handler(request, exc)
        await response(scope, receive, send)
