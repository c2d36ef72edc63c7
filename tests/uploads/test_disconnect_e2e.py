"""A client that disconnects mid-body: the live service aborts the upstream request and
records the upload as aborted, never complete (real sockets, real processes)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.uploads.models import Upload
from tests.live import Proc, create_key_in
from tests.transcripts.harness import wait_until

pytestmark = pytest.mark.e2e


async def test_disconnect_mid_body_aborts_the_upstream_upload(
    live_service: Proc, emulator: Proc, database_url: str, committed: Any
) -> None:
    key = await asyncio.to_thread(create_key_in, database_url, ["transcripts"], "disconnect")
    async with httpx.AsyncClient(base_url=emulator.url, timeout=10) as emu:
        before = (await emu.get("/_emulator/uploads")).json()
    total, sent = 50_000_000, 3_000_000
    reader, writer = await asyncio.open_connection("127.0.0.1", live_service.port)
    writer.write(
        (
            "POST /v2/upload HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{live_service.port}\r\n"
            f"Authorization: {key}\r\n"
            "Content-Type: application/octet-stream\r\n"
            f"Content-Length: {total}\r\n\r\n"
        ).encode()
    )
    chunk = b"\x01" * 100_000
    for _ in range(sent // len(chunk)):
        writer.write(chunk)
        await writer.drain()

    async def started() -> bool:
        async with committed() as session:
            row = await session.scalar(
                select(Upload).where(Upload.declared_bytes == total, Upload.status == "receiving")
            )
        return row is not None

    await wait_until(started)  # the body is streaming upstream now
    writer.transport.abort()  # the client vanishes mid-body

    async def recorded() -> bool:
        async with committed() as session:
            rows = list(
                await session.scalars(
                    select(Upload).where(Upload.declared_bytes == total, Upload.key_id.is_not(None))
                )
            )
        return any(r.status != "receiving" for r in rows)

    await wait_until(recorded)
    async with committed() as session:
        rows = list(await session.scalars(select(Upload).where(Upload.declared_bytes == total)))
    row = rows[-1]
    assert row.status == "aborted"
    assert row.upload_url is None
    assert row.error is not None
    assert "disconnected" in row.error
    assert 0 < row.bytes < total
    # Upstream saw the request end early: it recorded no upload.
    async with httpx.AsyncClient(base_url=emulator.url, timeout=10) as emu:
        after = (await emu.get("/_emulator/uploads")).json()
    assert after == before
    del reader
