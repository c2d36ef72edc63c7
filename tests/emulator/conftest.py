"""Fixtures for the emulator's tests: a fast emulator process, speech WAVs, a webhook
receiver, and the app in-process for settings variants."""

from __future__ import annotations

import http.server
import json
import shutil
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from emulator.config import EmulatorSettings
from emulator.main import create_app
from tests.live import EMULATOR_KEY, Proc, run_emulator

OTHER_KEY = "emulator-other-key"
# Tiny schedule knobs so jobs finish and webhooks retry within a test's patience.
FAST_KNOBS: dict[str, Any] = {
    "processing_factor": 0.01,
    "min_processing_s": 0.05,
    "queued_s": 0.02,
    "webhook_retry_interval_s": 0.2,
    "webhook_timeout_s": 0.5,
    "webhook_max_retries": 10,
    "webhook_before_response": False,
}


@pytest.fixture(scope="session")
def fast_emulator() -> Iterator[Proc]:
    """An emulator process of our own (its knobs are changed by tests), with a second key."""
    with run_emulator({"EMULATOR_EXTRA_API_KEYS": OTHER_KEY}) as proc:
        yield proc


@dataclass
class Emu:
    url: str
    key: str = EMULATOR_KEY
    other_key: str = OTHER_KEY
    http: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.http = httpx.Client(base_url=self.url, timeout=10, trust_env=False)

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": key or self.key}

    def upload(self, data: bytes, key: str | None = None) -> str:
        response = self.http.post("/v2/upload", content=data, headers=self.auth(key))
        assert response.status_code == 200, response.text
        url: str = response.json()["upload_url"]
        return url

    def submit(self, key: str | None = None, **body: Any) -> dict[str, Any]:
        body.setdefault("speech_models", ["universal-3-pro", "universal-2"])
        response = self.http.post("/v2/transcript", json=body, headers=self.auth(key))
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    def wait(self, transcript_id: str, timeout: float = 15) -> dict[str, Any]:
        """Poll until the transcript is completed or error."""
        deadline = time.monotonic() + timeout
        while True:
            response = self.http.get(f"/v2/transcript/{transcript_id}", headers=self.auth())
            body: dict[str, Any] = response.json()
            if body.get("status") in ("completed", "error"):
                return body
            assert time.monotonic() < deadline, f"still {body.get('status')} after {timeout} s"
            time.sleep(0.02)

    def knobs(self, **values: Any) -> dict[str, Any]:
        response = self.http.patch("/_emulator/config", json=values)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    def fault(self, **fault: Any) -> None:
        response = self.http.post("/_emulator/faults", json=fault)
        assert response.status_code == 201, response.text

    def attempts(self, transcript_id: str) -> list[dict[str, Any]]:
        response = self.http.get("/_emulator/webhooks", params={"transcript_id": transcript_id})
        result: list[dict[str, Any]] = response.json()
        return result

    def wait_attempts(self, transcript_id: str, count: int, timeout: float = 10) -> list[Any]:
        """Poll until `count` webhook attempts are recorded: the emulator records one after
        the receiver's answer, so a receiver that has the request may be ahead of it."""
        deadline = time.monotonic() + timeout
        while len(attempts := self.attempts(transcript_id)) < count:
            assert time.monotonic() < deadline, f"{len(attempts)} of {count} attempts: {attempts}"
            time.sleep(0.02)
        return attempts


@pytest.fixture
def emu(fast_emulator: Proc) -> Iterator[Emu]:
    """The fast emulator, reset to empty records, no faults and fast knobs."""
    helper = Emu(fast_emulator.url)
    helper.http.post("/_emulator/reset").raise_for_status()
    helper.knobs(**FAST_KNOBS)
    yield helper
    helper.http.delete("/_emulator/faults")
    helper.http.close()


@pytest.fixture(scope="session")
def speech_wav(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., bytes]:
    """WAV bytes of espeak-ng speaking `text` (22.05 kHz mono PCM16), cached per text."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    folder = tmp_path_factory.mktemp("speech")
    cache: dict[tuple[str, str], bytes] = {}

    def make(text: str, voice: str = "en-us+m3") -> bytes:
        if (text, voice) not in cache:
            path = folder / f"{len(cache)}.wav"
            subprocess.run(
                ["espeak-ng", "-v", voice, "-s", "160", "-w", str(path), text], check=True
            )
            cache[(text, voice)] = path.read_bytes()
        return cache[(text, voice)]

    return make


@dataclass
class Receiver:
    """A local HTTP server answering POSTs with scripted statuses and recording them."""

    statuses: list[int] = field(default_factory=list)  # answers in order, then `default`
    default: int = 200
    delay_s: list[float] = field(default_factory=list)  # per-request delay, in order
    files: dict[str, bytes] = field(default_factory=dict)  # GET path -> body
    received: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_for(self, count: int, timeout: float = 10) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            assert time.monotonic() < deadline, f"{len(self.received)} of {count} requests"
            time.sleep(0.01)
        return self.received


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length)
            with state._lock:
                index = len(state.received)
                state.received.append(
                    {
                        "at": time.monotonic(),
                        "path": self.path,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "json": json.loads(body or b"null"),
                    }
                )
                status = state.statuses[index] if index < len(state.statuses) else state.default
                delay = state.delay_s[index] if index < len(state.delay_s) else 0.0
            if delay:
                time.sleep(delay)
            try:
                self.send_response(status)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
            except OSError:
                pass  # the emulator gave up waiting

        def do_GET(self) -> None:  # noqa: N802
            body = state.files.get(self.path)
            if body is None:
                self.send_response(404)
                self.send_header("content-length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@asynccontextmanager
async def inprocess(tmp_path: Path, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The emulator app in this process (for settings variants), over ASGI."""
    values: dict[str, Any] = {"api_key": EMULATOR_KEY, "test_mode": True, "data_dir": tmp_path}
    values.update(settings)
    app = create_app(EmulatorSettings(**values))
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://emulator.test") as c:
            yield c
