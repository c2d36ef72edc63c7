"""Helpers for the emulator's WebSocket tests: speech clips, paced sending, event waits."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

Event = dict[str, Any]


@cache
def speech(text: str, rate: int, encoding: str = "pcm_s16le", lead_s: float = 0.2) -> bytes:
    """espeak-ng speaking `text`, resampled by sox to `rate`, as raw PCM16 or mu-law,
    with `lead_s` of silence in front."""
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        pytest.skip("espeak-ng and sox are needed for speech clips")
    sox_encoding = ["-e", "signed", "-b", "16"] if encoding == "pcm_s16le" else ["-e", "mu-law"]
    with tempfile.TemporaryDirectory() as folder:
        wav, raw = Path(folder) / "s.wav", Path(folder) / "s.raw"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "165", "-w", str(wav), text], check=True)
        subprocess.run(
            ["sox", str(wav), "-r", str(rate), "-c", "1", *sox_encoding, "-t", "raw", str(raw)]
            + ["pad", str(lead_s), "0"],
            check=True,
        )
        return raw.read_bytes()


def silence(seconds: float, rate: int, encoding: str = "pcm_s16le") -> bytes:
    if encoding == "pcm_s16le":
        return b"\x00\x00" * int(rate * seconds)
    return b"\xff" * int(rate * seconds)  # mu-law zero


def chunks(data: bytes, size: int) -> list[bytes]:
    """`data` cut into `size`-byte chunks; the last one padded with the encoding's zero."""
    out = [data[i : i + size] for i in range(0, len(data), size)]
    if out and len(out[-1]) < size:
        pad = b"\xff" if size % 2 else b"\x00"
        out[-1] = out[-1] + pad * (size - len(out[-1]))
    return out


async def send_paced(ws: ClientConnection, pieces: list[bytes], interval_s: float) -> None:
    """Send one piece every `interval_s`, on a schedule that does not drift (real time)."""
    started = time.monotonic()
    for i, piece in enumerate(pieces):
        delay = started + i * interval_s - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await ws.send(piece)


async def next_event(ws: ClientConnection, timeout: float = 10) -> Event:
    raw = await asyncio.wait_for(ws.recv(), timeout)
    event: Event = json.loads(raw)
    return event


async def until(
    ws: ClientConnection, predicate: Callable[[Event], bool], timeout: float = 20
) -> list[Event]:
    """Every event received up to and including the first that matches `predicate`."""
    seen: list[Event] = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, (
            f"no matching event within {timeout} s; saw {[e.get('type') for e in seen]}"
        )
        event = await next_event(ws, left)
        seen.append(event)
        if predicate(event):
            return seen


def of_type(kind: str) -> Callable[[Event], bool]:
    return lambda event: event.get("type") == kind


async def closed(ws: ClientConnection, timeout: float = 10) -> tuple[int | None, str, list[Event]]:
    """Drain until the server closes: (close code, reason, events seen before)."""
    seen: list[Event] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"still open after {timeout} s; saw {[e.get('type') for e in seen]}"
            raw = await asyncio.wait_for(ws.recv(), left)
            seen.append(json.loads(raw) if isinstance(raw, str) else {"binary": len(raw)})
    except ConnectionClosed:
        pass
    return ws.close_code, ws.close_reason or "", seen
