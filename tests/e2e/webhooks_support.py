"""Support for the reconciler tests: a counting stand-in for AssemblyAI's transcript GET and
a caller webhook receiver, served by uvicorn on a real port in a thread; and helpers that
write jobs straight into the database (as the submit path leaves them).

The emulator is the stand-in for everything else; this one exists because these tests need
exact per-transcript GET counts and a receiver that fails on command.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.core.db import plain_url
from app.core.secretbox import box_for
from app.core.security import hash_key
from tests.live import free_port


@dataclass
class RelayHit:
    name: str
    headers: dict[str, str]
    body: bytes
    answered: int


@dataclass
class StandIn:
    port: int
    transcripts: dict[str, dict[str, Any]] = field(default_factory=dict)
    gets: Counter[str] = field(default_factory=Counter)
    get_delay_s: float = 0.0
    # Per-transcript GET delays (seconds), on top of get_delay_s.
    slow: dict[str, float] = field(default_factory=dict)
    relay_hits: list[RelayHit] = field(default_factory=list)
    # name -> answers to give before 200 (e.g. [500, 500, 500]).
    relay_script: dict[str, list[int]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def hits(self, name: str) -> list[RelayHit]:
        with self.lock:
            return [h for h in self.relay_hits if h.name == name]


def _app(state: StandIn) -> Starlette:
    async def get_transcript(request: Request) -> Response:
        tid = request.path_params["tid"]
        with state.lock:
            state.gets[tid] += 1
        delay = state.get_delay_s + state.slow.get(tid, 0.0)
        if delay:
            await asyncio.sleep(delay)
        with state.lock:
            obj = state.transcripts.get(tid)
        if obj is None:
            return JSONResponse({"error": "Transcript not found"}, status_code=404)
        return JSONResponse(obj)

    async def relay(request: Request) -> Response:
        name = request.path_params["name"]
        body = await request.body()
        with state.lock:
            script = state.relay_script.get(name) or []
            answer = script.pop(0) if script else 200
            state.relay_hits.append(RelayHit(name, dict(request.headers), body, answer))
        return Response(status_code=answer)

    async def load(request: Request) -> Response:
        objs = await request.json()
        with state.lock:
            for obj in objs:
                state.transcripts[obj["id"]] = obj
        return JSONResponse({"loaded": len(objs)})

    async def stats(_: Request) -> Response:
        with state.lock:
            return JSONResponse({"gets": dict(state.gets)})

    return Starlette(
        routes=[
            Route("/v2/transcript/{tid}", get_transcript, methods=["GET"]),
            Route("/hook/{name}", relay, methods=["POST"]),
            Route("/_load", load, methods=["POST"]),
            Route("/_stats", stats, methods=["GET"]),
        ]
    )


@contextmanager
def run_stand_in() -> Iterator[StandIn]:
    state = StandIn(port=free_port())
    # A short graceful shutdown: a hanging GET whose caller is gone (the worker test's 20 s
    # fetch) would otherwise outlive the join below, 5 s of every module teardown.
    config = uvicorn.Config(
        _app(state),
        host="127.0.0.1",
        port=state.port,
        log_level="warning",
        lifespan="off",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("stand-in did not start")
        time.sleep(0.02)
    try:
        yield state
    finally:
        server.should_exit = True
        thread.join(5)


@contextmanager
def run_stand_in_process() -> Iterator[str]:
    """The stand-in in its own process (so a load generator does not share its GIL);
    load transcripts with POST /_load, read GET counts from GET /_stats. Yields its URL."""
    import subprocess
    import sys

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.e2e.webhooks_support", str(port)],
        cwd=Path(__file__).resolve().parents[2],
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                httpx.get(f"{url}/_stats", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the stand-in process did not start") from None
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def transcript(tid: str, status: str = "completed", **extra: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {"id": tid, "status": status, "audio_duration": 3.0}
    if status == "completed":
        obj["text"] = f"text of {tid}"
    if status == "error":
        obj["error"] = "Audio file could not be decoded."
    return {**obj, **extra}


# --- database helpers (committed rows, as the service processes see them) -----------------


def db(database_url: str, work: Callable[[asyncpg.Connection], Any]) -> Any:
    async def run() -> Any:
        conn = await asyncpg.connect(plain_url(database_url))
        try:
            return await work(conn)
        finally:
            await conn.close()

    return asyncio.run(run())


def key_id_of(database_url: str, raw_key: str) -> uuid.UUID:
    return db(  # type: ignore[no-any-return]
        database_url,
        lambda c: c.fetchval("SELECT id FROM api_keys WHERE key_hash = $1", hash_key(raw_key)),
    )


def insert_jobs(
    database_url: str,
    key_id: uuid.UUID,
    upstream_ids: list[str],
    *,
    secret: str,
    due: bool = False,
    caller_webhook_url: str | None = None,
    caller_auth: tuple[str, str] | None = None,
    status: str = "queued",
) -> list[uuid.UUID]:
    """Jobs as the submit path leaves them: upstream id set, waiting for a webhook or a poll."""
    now = datetime.now(UTC)
    rows = [
        (
            uuid.uuid4(),
            key_id,
            tid or None,
            status,
            "https://example.com/a.wav",
            "{}",
            hash_key(secret),
            caller_webhook_url,
            now,
            now,
            now if due else None,
            caller_auth[0] if caller_auth else None,
            box_for(()).seal(caller_auth[1]) if caller_auth else None,  # as the submit stores it
        )
        for tid in upstream_ids
    ]

    async def work(conn: asyncpg.Connection) -> None:
        await conn.executemany(
            """
            INSERT INTO jobs (id, key_id, upstream_id, status, audio_url, request,
                webhook_secret_hash, caller_webhook_url, created_at, updated_at, next_check_at,
                check_attempts, version, caller_webhook_auth_header_name,
                caller_webhook_auth_header_value)
            VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, $10, $11, 0, 0, $12, $13)
            """,
            rows,
        )

    db(database_url, work)
    return [r[0] for r in rows]


def job_rows(database_url: str, ids: list[uuid.UUID]) -> dict[uuid.UUID, Any]:
    rows = db(
        database_url,
        lambda c: c.fetch("SELECT * FROM jobs WHERE id = ANY($1::uuid[])", ids),
    )
    return {r["id"]: r for r in rows}


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def post_webhook(
    client: httpx.Client, service_url: str, job_id: uuid.UUID, tid: str, secret: str
) -> httpx.Response:
    return client.post(
        f"{service_url}/webhooks/assemblyai/{job_id}",
        json={"transcript_id": tid, "status": "completed"},
        headers={"X-AAI-Proxy-Webhook-Secret": secret},
    )


if __name__ == "__main__":
    import sys

    server_port = int(sys.argv[1])
    stand_in = StandIn(port=server_port)
    uvicorn.run(
        _app(stand_in), host="127.0.0.1", port=server_port, log_level="warning", lifespan="off"
    )
