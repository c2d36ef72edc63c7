"""Fixtures for the jobs feature: the app in-process (committed transactions, as in
production, since submits commit in their own short transactions) against a real emulator
process; keys committed to the session's database; small real WAV files."""

from __future__ import annotations

import asyncio
import io
import math
import struct
import wave
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.core.config import Settings
from app.core.db import create_sessionmaker
from app.keys import service as keys_service
from app.main import create_app
from tests.live import EMULATOR_KEY, Proc

MakeKey = Callable[..., Awaitable[str]]


def wav_bytes(seconds: float = 1.0, rate: int = 16000, freq: float = 440.0) -> bytes:
    """A real mono PCM16 WAV: a quiet tone (the emulator decodes it)."""
    frames = int(seconds * rate)
    samples = (int(3000 * math.sin(2 * math.pi * freq * i / rate)) for i in range(frames))
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(struct.pack(f"<{frames}h", *samples))
    return buffer.getvalue()


@pytest.fixture(scope="session")
def committed(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return create_sessionmaker(engine)


@pytest.fixture
def new_key(committed: async_sessionmaker[AsyncSession]) -> MakeKey:
    async def make(*scopes: str, name: str = "jobs test key") -> str:
        async with committed() as session, session.begin():
            _, raw = await keys_service.create_key(session, name, scopes or ("transcripts",))
        return raw

    return make


@pytest.fixture
def jobs_settings(
    make_settings: Callable[..., Settings], emulator: Proc
) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "assemblyai_api_key": SecretStr(EMULATOR_KEY),
            "assemblyai_api_base_url": emulator.url,
            "reconciler_enabled": False,  # reads must be ours alone to observe
            # Nor may a live service's reconciler (same database) poll these jobs: its GETs
            # would consume the faults injected into the shared emulator.
            "poll_initial_delay_s": 3600.0,
            "idempotency_wait_s": 10.0,
        }
        values.update(overrides)
        return make_settings(**values)

    return make


@pytest.fixture
def start_app() -> Callable[[Settings], Any]:
    """An async context manager factory: the real app (lifespan included) and a client."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def start(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
        app = create_app(settings, configure_logs=False)
        async with LifespanManager(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://testserver", timeout=30
            ) as client:
                yield app, client

    return start


@pytest.fixture
async def jobs(
    jobs_settings: Callable[..., Settings], start_app: Callable[[Settings], Any]
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    async with start_app(jobs_settings()) as pair:
        yield pair


@pytest.fixture
async def emu(emulator: Proc) -> AsyncIterator[httpx.AsyncClient]:
    """The emulator itself: inspection, faults, and upstream as seen with its own key."""
    async with httpx.AsyncClient(
        base_url=emulator.url, headers={"Authorization": EMULATOR_KEY}, timeout=30
    ) as client:
        yield client
        await client.delete("/_emulator/faults")


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.05)
