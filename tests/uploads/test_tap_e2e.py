"""Uploads through the server's body tap (app/core/http_server.py): the live service under
uvicorn with `TapProtocol`, the real emulator, raw sockets where the wire matters.

A tapped upload is visible on the wire: the connection closes after the answer (the parser
never saw the tapped bytes), while a chunked upload, which goes through ASGI, keeps it."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.uploads.models import Upload
from tests.live import Proc, create_key_in
from tests.transcripts.harness import wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture
async def key(database_url: str) -> str:
    return await asyncio.to_thread(create_key_in, database_url, ["transcripts"], "tap")


async def received_by_emulator(emulator: Proc, sha: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=emulator.url, timeout=10) as emu:
        uploads: list[dict[str, Any]] = (await emu.get("/_emulator/uploads")).json()
    return [u for u in uploads if u["sha256"] == sha]


async def row_for(committed: Any, declared: int) -> Upload:
    async def settled() -> bool:
        async with committed() as session:
            rows = await session.scalars(select(Upload).where(Upload.declared_bytes == declared))
            return any(r.status != "receiving" for r in rows)

    await wait_until(settled)
    async with committed() as session:
        row = await session.scalar(select(Upload).where(Upload.declared_bytes == declared))
    assert row is not None
    return row


async def raw_exchange(
    port: int, head: str, body: bytes, *, expect_continue: bool = False
) -> bytes:
    """Send one request on a fresh socket and read until the server closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head.encode())
        if expect_continue:
            interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert interim.startswith(b"HTTP/1.1 100"), interim
        for i in range(0, len(body), 1 << 20):
            writer.write(body[i : i + (1 << 20)])
            await writer.drain()
        return await asyncio.wait_for(reader.read(), 30)  # to EOF: the server closes
    finally:
        writer.close()


def head_for(port: int, key: str, length: int, extra: str = "") -> str:
    return (
        "POST /v2/upload HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        f"Authorization: {key}\r\n"
        "Content-Type: application/octet-stream\r\n"
        f"{extra}Content-Length: {length}\r\n\r\n"
    )


async def test_a_tapped_upload_arrives_intact_is_recorded_and_closes_the_connection(
    live_service: Proc, emulator: Proc, key: str, committed: Any
) -> None:
    audio = uuid.uuid4().bytes * 700_000  # ~11 MiB, unique
    async with httpx.AsyncClient(base_url=live_service.url, timeout=30) as client:
        response = await client.post("/v2/upload", content=audio, headers={"Authorization": key})
        assert response.status_code == 200, response.text
        assert response.headers["connection"] == "close"  # the tap was used
        upload_url = response.json()["upload_url"]
        # The next request simply opens a new connection.
        assert (await client.get("/healthz")).status_code == 200
    received = await received_by_emulator(emulator, hashlib.sha256(audio).hexdigest())
    assert [u["bytes"] for u in received] == [len(audio)]
    row = await row_for(committed, len(audio))
    assert row.status == "completed"
    assert row.upload_url == upload_url
    assert row.bytes == len(audio)


async def test_a_chunked_upload_goes_through_asgi_and_keeps_the_connection(
    live_service: Proc, emulator: Proc, key: str
) -> None:
    audio = uuid.uuid4().bytes * 100_000

    async def pieces() -> Any:
        for i in range(0, len(audio), 65_536):
            yield audio[i : i + 65_536]

    async with httpx.AsyncClient(base_url=live_service.url, timeout=30) as client:
        response = await client.post("/v2/upload", content=pieces(), headers={"Authorization": key})
        assert response.status_code == 200, response.text
        assert response.headers.get("connection") != "close"
    received = await received_by_emulator(emulator, hashlib.sha256(audio).hexdigest())
    assert [u["bytes"] for u in received] == [len(audio)]


async def test_expect_100_continue_then_the_tap(
    live_service: Proc, emulator: Proc, key: str
) -> None:
    audio = uuid.uuid4().bytes * 200_000
    head = head_for(live_service.port, key, len(audio), "Expect: 100-continue\r\n")
    raw = await raw_exchange(live_service.port, head, audio, expect_continue=True)
    assert raw.startswith(b"HTTP/1.1 200"), raw[:300]
    assert b"upload_url" in raw
    received = await received_by_emulator(emulator, hashlib.sha256(audio).hexdigest())
    assert [u["bytes"] for u in received] == [len(audio)]


async def test_a_request_pipelined_after_a_tapped_body_is_never_misread(
    live_service: Proc, emulator: Proc, key: str
) -> None:
    # The parser never saw the tapped bytes, so whatever follows the body on the same
    # connection must not be parsed as a request: the server answers the upload with
    # `Connection: close` and closes, as uvicorn does for any `Connection: close` answer
    # (with unread bytes the kernel may turn the close into a reset).
    audio = uuid.uuid4().bytes * 100_000
    head = head_for(live_service.port, key, len(audio))
    trailing = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{live_service.port}\r\n\r\n".encode()
    try:
        raw = await raw_exchange(live_service.port, head, audio + trailing)
    except ConnectionResetError:
        raw = b""
    assert raw.count(b"HTTP/1.1 ") <= 1
    if raw:
        assert raw.startswith(b"HTTP/1.1 200"), raw[:300]
        assert b"connection: close" in raw.lower()
    received = await received_by_emulator(emulator, hashlib.sha256(audio).hexdigest())
    assert [u["bytes"] for u in received] == [len(audio)]  # the body itself went through


async def test_upstream_refusing_mid_body_is_answered_and_recorded(
    live_service: Proc, emulator: Proc, key: str, committed: Any
) -> None:
    # The emulator answers 503 without reading the body: upstream ends the exchange while
    # the tap is still forwarding, and its answer (not a broken pipe) is what the caller gets.
    async with httpx.AsyncClient(base_url=emulator.url, timeout=10) as emu:
        fault = await emu.post(
            "/_emulator/faults", json={"route": "POST /v2/upload", "status": 503}
        )
        assert fault.status_code == 201
    audio = uuid.uuid4().bytes * 3_000_000  # ~46 MiB: far more than the socket buffers hold
    reader, writer = await asyncio.open_connection("127.0.0.1", live_service.port)
    writer.write(head_for(live_service.port, key, len(audio)).encode())

    async def send_body() -> None:
        try:
            for i in range(0, len(audio), 1 << 20):
                writer.write(audio[i : i + (1 << 20)])
                await writer.drain()
        except ConnectionError:
            pass  # the server answered and closed before the whole body was sent

    sender = asyncio.create_task(send_body())
    answer = await asyncio.wait_for(reader.read(), 30)
    sender.cancel()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 502"), answer[:300]
    assert b'"error"' in answer
    assert b"connection: close" in answer.lower()  # said before the server closes
    row = await row_for(committed, len(audio))
    assert row.status == "failed"
    assert row.upload_url is None
    assert row.bytes < len(audio)
