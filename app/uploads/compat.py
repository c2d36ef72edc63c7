"""Errors on the AssemblyAI-compatible surface, in upstream's shape.

AssemblyAI's clients (the official SDKs included) show a failed call's `error` field as
its message. Our usual `{"error": "ClassName", "detail": "..."}` would turn a policy hint
such as "use `domain: \"medical-v1\"`" into a bare "BadRequest" in the caller's exception,
so routes of the compatible surface answer `{"error": "<sentence>", "detail": "<sentence>"}`
(`detail` kept for clients written against the app surface). Dependency failures (a
missing key) are covered too: they are raised inside the route handler.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app.core.boundary import BoundaryRoute
from app.core.errors import AppError


class CompatRoute(BoundaryRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except AppError as exc:
                response = JSONResponse(
                    {"error": exc.message, "detail": exc.message}, status_code=exc.status_code
                )
                response.headers.update(exc.headers)
                return response

        return route
