"""Fault injection and inspection under /_emulator/ (test mode only; 404 otherwise).

POST   /_emulator/faults              {"route", "status", "retry_after", "delay_s", "drop",
                                       "close_code", "count", "withhold"} (or a list)
GET    /_emulator/faults              queued faults per route
DELETE /_emulator/faults[?route=]     clear all (or one route's)
GET    /_emulator/uploads             [{key, bytes, sha256, sink, created_at}]
GET    /_emulator/webhooks            every delivery attempt (?transcript_id= filters)
GET    /_emulator/transcripts         every transcript (all keys), as served
GET    /_emulator/llm                 every LLM Gateway call
GET    /_emulator/sessions            WebSocket sessions (?frames=false drops frame lists)
GET    /_emulator/sessions/{id}       one session with its frames
GET    /_emulator/sessions/{id}/pcm   the session's input audio, raw bytes
POST   /_emulator/reset               forget everything, clear faults, cancel jobs
GET    /_emulator/config              the schedule knobs; PATCH to change them
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from emulator import transcripts as tx
from emulator.recognition import recognition_mode
from emulator.state import ROUTES, EmulatorState, Fault, Knobs, WsSessionRecord, get_state


def _state(request: Request) -> EmulatorState | None:
    state = get_state(request)
    return state if state.settings.test_mode else None


def _not_found() -> JSONResponse:
    return JSONResponse({"error": "Not found"}, status_code=404)


def _bad(message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=400)


async def _json(request: Request) -> Any:
    try:
        return json.loads(await request.body() or b"{}")
    except ValueError:
        return None


def parse_fault(item: Any) -> tuple[str, Fault] | str:
    if not isinstance(item, dict):
        return "a fault is a JSON object"
    route = item.get("route")
    if route not in ROUTES:
        return f"route must be one of: {', '.join(ROUTES)}"
    try:
        fault = Fault(
            status=None if item.get("status") is None else int(item["status"]),
            retry_after=None if item.get("retry_after") is None else int(item["retry_after"]),
            delay_s=float(item.get("delay_s") or 0),
            drop=bool(item.get("drop", False)),
            close_code=None if item.get("close_code") is None else int(item["close_code"]),
            count=int(item.get("count", 1)),
            withhold=bool(item.get("withhold", False)),
        )
    except (TypeError, ValueError):
        return "status, retry_after, close_code and count are integers; delay_s a number"
    if fault.count < 1:
        return "count must be at least 1"
    if fault.status is not None and not (0 <= fault.status <= 599):
        return "status must be an HTTP status (or 0: no answer, for WEBHOOK)"
    return route, fault


async def faults(request: Request) -> Response:
    """Inject, list or clear faults."""
    state = _state(request)
    if state is None:
        return _not_found()
    if request.method == "GET":
        return JSONResponse(state.faults.snapshot())
    if request.method == "DELETE":
        state.faults.clear(request.query_params.get("route"))
        return JSONResponse(state.faults.snapshot())
    body = await _json(request)
    items = body if isinstance(body, list) else [body]
    parsed = [parse_fault(item) for item in items]
    problems = [p for p in parsed if isinstance(p, str)]
    if problems:
        return _bad(problems[0])
    for route, fault in (p for p in parsed if not isinstance(p, str)):
        state.faults.add(route, fault)
    return JSONResponse(state.faults.snapshot(), status_code=201)


async def uploads(request: Request) -> Response:
    """What /v2/upload received."""
    state = _state(request)
    if state is None:
        return _not_found()
    return JSONResponse(
        [
            {
                "key": u.key,
                "bytes": u.size,
                "sha256": u.sha256,
                "sink": u.path is None,
                "created_at": u.created_at,
            }
            for u in state.records.uploads.values()
        ]
    )


async def webhooks(request: Request) -> Response:
    """Every webhook delivery attempt."""
    state = _state(request)
    if state is None:
        return _not_found()
    wanted = request.query_params.get("transcript_id")
    return JSONResponse(
        [
            asdict(a)
            for a in state.records.webhook_attempts
            if wanted is None or a.transcript_id == wanted
        ]
    )


async def transcripts(request: Request) -> Response:
    """Every transcript, of every key."""
    state = _state(request)
    if state is None:
        return _not_found()
    return JSONResponse([tx.public(t) for t in state.records.transcripts.values()])


async def llm_calls(request: Request) -> Response:
    """Every LLM Gateway call."""
    state = _state(request)
    if state is None:
        return _not_found()
    return JSONResponse([asdict(c) for c in state.records.llm_calls])


def _session_public(record: Any, with_frames: bool) -> Any:
    if hasattr(record, "public"):
        return record.public(with_frames=with_frames)
    return {"id": getattr(record, "id", None)}


async def sessions(request: Request) -> Response:
    """WebSocket sessions (streaming and Voice Agent)."""
    state = _state(request)
    if state is None:
        return _not_found()
    with_frames = request.query_params.get("frames", "true").lower() != "false"
    return JSONResponse(
        [_session_public(r, with_frames) for r in list(state.records.ws_sessions.values())]
    )


def _session_record(request: Request) -> WsSessionRecord | None:
    """The path's WebSocket session (None outside test mode, or when there is none)."""
    state = _state(request)
    if state is None:
        return None
    return state.records.ws_sessions.get(request.path_params["session_id"])


async def session(request: Request) -> Response:
    """One WebSocket session with its frames."""
    record = _session_record(request)
    if record is None:
        return _not_found()
    return JSONResponse(_session_public(record, True))


async def session_pcm(request: Request) -> Response:
    """The session's input audio as received (raw bytes)."""
    record = _session_record(request)
    if record is None:
        return _not_found()
    headers = {
        "x-sample-rate": str(getattr(record, "sample_rate", "")),
        "x-encoding": str(getattr(record, "encoding", "")),
    }
    return Response(
        bytes(getattr(record, "pcm", b"")), media_type="application/octet-stream", headers=headers
    )


async def reset(request: Request) -> Response:
    """Forget every record and fault."""
    state = _state(request)
    if state is None:
        return _not_found()
    state.reset()
    return JSONResponse({"reset": True})


async def config(request: Request) -> Response:
    """Read or change the schedule knobs."""
    state = _state(request)
    if state is None:
        return _not_found()
    if request.method == "PATCH":
        body = await _json(request)
        if not isinstance(body, dict):
            return _bad("a JSON object of knobs")
        names = {f.name: f.type for f in fields(Knobs)}
        for name, value in body.items():
            if name not in names:
                return _bad(f"unknown knob {name!r}; knobs: {', '.join(names)}")
            current = getattr(state.knobs, name)
            try:
                if isinstance(current, bool):
                    if not isinstance(value, bool):
                        raise ValueError
                    converted: Any = value
                else:
                    converted = type(current)(value)
                    if converted < 0:
                        raise ValueError
            except (TypeError, ValueError):
                return _bad(f"bad value for {name}")
            setattr(state.knobs, name, converted)
    return JSONResponse(
        {
            **asdict(state.knobs),
            "recognition": recognition_mode(state.settings.recognition),
            "upload_sink": state.settings.upload_sink,
            "region": state.settings.region,
        }
    )


async def health(request: Request) -> Response:
    """Always on (not only in test mode): who is answering on this port."""
    return JSONResponse({"status": "ok", "nonce": get_state(request).settings.instance_nonce})


routes: list[BaseRoute] = [
    Route("/_emulator/health", health, methods=["GET"]),
    Route("/_emulator/faults", faults, methods=["GET", "POST", "DELETE"]),
    Route("/_emulator/uploads", uploads, methods=["GET"]),
    Route("/_emulator/webhooks", webhooks, methods=["GET"]),
    Route("/_emulator/transcripts", transcripts, methods=["GET"]),
    Route("/_emulator/llm", llm_calls, methods=["GET"]),
    Route("/_emulator/sessions", sessions, methods=["GET"]),
    Route("/_emulator/sessions/{session_id}", session, methods=["GET"]),
    Route("/_emulator/sessions/{session_id}/pcm", session_pcm, methods=["GET"]),
    Route("/_emulator/reset", reset, methods=["POST"]),
    Route("/_emulator/config", config, methods=["GET", "PATCH"]),
]
