"""A small, real LLM Gateway stand-in on a real port for the LLM feature's tests.

It answers OpenAI-shaped completions with usage, streams SSE chunks, serves transcript
paragraphs, records every call, and can be told to fail or to hold its answers, so the
service's retries, budget holds and stream pass-through are exercised over real sockets.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

KEY = "fake-llm-key"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def serve(app: Any, *, lifespan: str = "off") -> AsyncIterator[str]:
    """Serve an ASGI app with uvicorn in this event loop; yields its base URL."""
    port = free_port()
    # No log_config, no log_level and the access log on: else uvicorn sets the process's
    # uvicorn loggers (level WARNING, propagate off) for every later test in the session.
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan=lifespan, log_config=None)
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(500):
            if server.started or task.done():
                break
            await asyncio.sleep(0.01)
        if task.done():
            task.result()
        assert server.started, "the test server did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def tokens(text: str) -> int:
    return max(1, len(text) // 4)


def answer_for(messages: list[dict[str, Any]]) -> str:
    system = next((m["content"] for m in messages if m.get("role") == "system"), "")
    user = next((m["content"] for m in messages if m.get("role") == "user"), "")
    if "numbered chapters" in system:
        numbers = re.findall(r"^Chapter (\d+):", user, flags=re.M)
        return "\n".join(f"{n}. Headline {n} | What chapter {n} is about." for n in numbers)
    bullets = re.search(r"exactly (\d+) bullet", system)
    if bullets:
        return "\n".join(f"- point {i}" for i in range(1, int(bullets.group(1)) + 1))
    if "action items" in system:
        return "- Alice sends the report\n- Bob books the room"
    if "part " in system and " of " in system:
        return f"notes on {len(user)} characters"
    return f"Summary of {len(user)} characters."


@dataclass
class FakeLlm:
    calls: list[dict[str, Any]] = field(default_factory=list)
    # Statuses to answer before answering normally, one per call (e.g. [503, 503]).
    faults: list[int] = field(default_factory=list)
    # When set, completions wait for it before answering (streams: after the first chunk).
    gate: asyncio.Event | None = None
    paragraphs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    paragraph_fetches: int = 0
    url: str = ""

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
                Route("/v2/transcript/{tid}/paragraphs", self.get_paragraphs, methods=["GET"]),
            ]
        )

    async def get_paragraphs(self, request: Request) -> Response:
        if request.headers.get("authorization") != KEY:
            return JSONResponse({"error": "Authentication error"}, status_code=401)
        tid = request.path_params["tid"]
        if tid not in self.paragraphs:
            return JSONResponse({"error": "Transcript not found"}, status_code=404)
        self.paragraph_fetches += 1
        return JSONResponse({"paragraphs": self.paragraphs[tid]})

    async def chat(self, request: Request) -> Response:
        if request.headers.get("authorization") != KEY:
            return JSONResponse({"error": "Authentication error"}, status_code=401)
        body = json.loads(await request.body())
        self.calls.append(body)
        if self.faults:
            status = self.faults.pop(0)
            return JSONResponse({"error": f"injected {status}"}, status_code=status)
        messages = body.get("messages") or []
        content = answer_for(messages)
        prompt = sum(tokens(str(m.get("content", ""))) for m in messages)
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": tokens(content),
            "total_tokens": prompt + tokens(content),
        }
        if body.get("stream"):
            return StreamingResponse(
                self._stream(body, content, usage), media_type="text/event-stream"
            )
        if self.gate is not None:
            await self.gate.wait()
        return JSONResponse(
            {
                "id": f"chatcmpl-{len(self.calls)}",
                "object": "chat.completion",
                "model": body.get("model"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
            }
        )

    async def _stream(
        self, body: dict[str, Any], content: str, usage: dict[str, int]
    ) -> AsyncIterator[bytes]:
        words = content.split(" ")
        for index, word in enumerate(words):
            piece = word if index == 0 else " " + word
            chunk = {
                "object": "chat.completion.chunk",
                "model": body.get("model"),
                "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
            }
            yield f"data: {json.dumps(chunk)}\n\n".encode()
            if index == 0 and self.gate is not None:
                await self.gate.wait()
        final = {
            "object": "chat.completion.chunk",
            "model": body.get("model"),
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            "usage": usage,
        }
        yield f"data: {json.dumps(final)}\n\n".encode()
        yield b"data: [DONE]\n\n"
