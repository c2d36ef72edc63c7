"""The OpenAPI document says what the service answers, errors included.

Routes list their own errors in `responses=` (a description each); this adds what holds
for every route, and the bodies:

- every error status carries its body schema: `Error` (`{"error": "ClassName", "detail":
  "..."}`), or on the AssemblyAI-compatible surface `CompatError` (upstream's shape,
  `{"error": "<sentence>"}`, which also carries `detail`);
- 422 is documented as it is sent (`ValidationFailed`: `detail` a sentence, `errors` the
  list), not FastAPI's `HTTPValidationError`;
- 400 on every operation: the input boundary (app/core/boundary.py) refuses a NUL in the
  path, query or headers, and bodies too deep or with unstorable characters, before any
  route runs;
- 503 on every operation but the liveness probe: a dependency (Postgres) is unavailable.

A test (tests/reliability/test_schema_openapi.py) runs schemathesis against the result.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from app.core.boundary import COMPAT_PREFIXES

_REF = "#/components/schemas/"
ERROR_SCHEMAS: dict[str, dict[str, Any]] = {
    "Error": {
        "type": "object",
        "title": "Error",
        "description": "Every error of the app surface.",
        "required": ["error", "detail"],
        "properties": {
            "error": {"type": "string", "description": "The error class, e.g. NotFound"},
            "detail": {"type": "string", "description": "What went wrong, in a sentence"},
        },
    },
    "CompatError": {
        "type": "object",
        "title": "CompatError",
        "description": "An error on the AssemblyAI-compatible surface, in upstream's shape: "
        "`error` is the sentence (SDKs show it); `detail` repeats it.",
        "required": ["error"],
        "properties": {
            "error": {"type": "string"},
            "detail": {"type": "string"},
        },
    },
    "ValidationFailed": {
        "type": "object",
        "title": "ValidationFailed",
        "description": "422: the parameters or body do not match this document.",
        "required": ["error", "detail", "errors"],
        "properties": {
            "error": {"type": "string", "enum": ["ValidationError"]},
            "detail": {"type": "string", "description": "Every problem, in one sentence"},
            "errors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["loc", "msg", "type"],
                    "properties": {
                        "loc": {"type": "array", "items": {"type": ["string", "integer"]}},
                        "msg": {"type": "string"},
                        "type": {"type": "string"},
                    },
                },
            },
        },
    },
}
_BOUNDARY_400 = (
    "Refused at the input boundary: a NUL character in the path, query or a header; or a "
    "body that is not JSON, nested deeper than 64 levels, or holds a NUL or lone surrogate"
)
_UNAVAILABLE_503 = "A dependency (Postgres) is unavailable; retry later"
_NO_503 = {"/healthz"}


def _content(ref: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": _REF + ref}}}


def document_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` (FastAPI's document) with every error response given its body schema."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.update(ERROR_SCHEMAS)
    for path, item in schema.get("paths", {}).items():
        error_ref = "CompatError" if path.startswith(COMPAT_PREFIXES) else "Error"
        for method, operation in item.items():
            if method not in ("get", "put", "post", "delete", "patch"):
                continue
            responses: dict[str, Any] = operation.setdefault("responses", {})
            responses.setdefault("400", {"description": _BOUNDARY_400})
            if path not in _NO_503:
                responses.setdefault("503", {"description": _UNAVAILABLE_503})
            for status, response in responses.items():
                if not status.isdigit() or int(status) < 400:
                    continue
                if status == "422":
                    response["content"] = _content("ValidationFailed")
                    response.setdefault("description", "Validation error")
                elif "content" not in response or not response["content"]:
                    response["content"] = _content(error_ref)
                if not response.get("description"):
                    response["description"] = status
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    return schema


def install(app: FastAPI) -> None:
    """Make `app.openapi()` answer the document with its errors described."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_errors(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
