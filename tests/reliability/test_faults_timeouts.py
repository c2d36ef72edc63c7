"""Slow and stalled clients against a real service process (uvicorn with `TapProtocol`, as
`aai-proxy serve` runs it): headers that never end, bodies that stop, a `Content-Length`
longer than what is sent, `Expect: 100-continue` with no body. Each is answered `408` and
its connection closed within the configured timeouts; none hangs."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections.abc import Iterator

import asyncpg
import pytest

from app.core.db import plain_url
from app.identity.scopes import ALL_SCOPES
from app.webhooks.service import WEBHOOK_AUTH_HEADER
from tests.live import Proc, create_key_in, run_service
from tests.reliability.faults import read_answer

pytestmark = pytest.mark.timeout(120)

HEADER_TIMEOUT_S = 1.0
BODY_IDLE_TIMEOUT_S = 1.0
# What the service may take beyond a timeout (checks run every quarter timeout; a loaded
# machine).
SLACK_S = 2.5


@pytest.fixture(scope="module")
def service(database_url: str, emulator: Proc) -> Iterator[tuple[Proc, str]]:
    key = create_key_in(database_url, ALL_SCOPES, name="timeouts")
    env = {
        "REQUEST_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
        "REQUEST_BODY_IDLE_TIMEOUT_S": str(BODY_IDLE_TIMEOUT_S),
    }
    with run_service(database_url, emulator.url, env=env) as proc:
        yield proc, key


def _connect(proc: Proc) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proc.port), timeout=10)


def _request_head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [
        f"{method} {path} HTTP/1.1",
        "Host: 127.0.0.1",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _status_and_body(answer: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)


def _assert_timed_out(answer: bytes, elapsed: float, limit: float) -> dict[str, object]:
    assert answer, "the connection closed without an answer"
    status, body = _status_and_body(answer)
    assert status == 408, answer
    assert body["error"] == "RequestTimeout", body
    assert isinstance(body["detail"], str)
    assert body["detail"], body
    assert b"connection: close" in answer.lower()
    assert elapsed < limit + SLACK_S, elapsed
    return body


def test_header_slowloris_is_answered_408_and_closed(service: tuple[Proc, str]) -> None:
    proc, _ = service
    with _connect(proc) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        # One header byte at a time, each well within any idle timeout.
        answer = b""
        for _ in range(40):
            try:
                sock.sendall(b"X")
            except OSError:
                break
            time.sleep(0.1)
            sock.settimeout(0.01)
            try:
                answer += sock.recv(65536)
            except (TimeoutError, BlockingIOError):
                continue
            except ConnectionResetError:
                break
            if answer:
                break
        answer += read_answer(sock, 5)
        elapsed = time.monotonic() - started
    _assert_timed_out(answer, elapsed, HEADER_TIMEOUT_S)


def test_silent_connection_is_closed(service: tuple[Proc, str]) -> None:
    proc, _ = service
    with _connect(proc) as sock:
        started = time.monotonic()
        answer = read_answer(sock, 10)
        elapsed = time.monotonic() - started
    assert answer == b""  # closed, with nothing to answer
    assert elapsed < HEADER_TIMEOUT_S + SLACK_S, elapsed


def test_keep_alive_then_slow_headers(service: tuple[Proc, str]) -> None:
    """The header timeout also applies to the second request of a connection."""
    proc, _ = service
    with _connect(proc) as sock:
        sock.sendall(_request_head("GET", "/healthz", {}))
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200"), first
        started = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        answer = read_answer(sock, 10)
        elapsed = time.monotonic() - started
    _assert_timed_out(answer, elapsed, HEADER_TIMEOUT_S)


def test_each_request_gets_the_whole_header_timeout(service: tuple[Proc, str]) -> None:
    """The deadline runs from a request's first bytes, not from the connection's start or
    from the previous request: one timer per connection is re-armed for what is left."""
    proc, _ = service
    with _connect(proc) as sock:
        for _ in range(3):  # requests across several firings of the connection's timer
            sock.sendall(_request_head("GET", "/healthz", {}))
            got = b""
            while not got.endswith(b"}"):  # the whole answer (head and JSON body)
                got += sock.recv(65536)
            assert got.startswith(b"HTTP/1.1 200"), got
            time.sleep(HEADER_TIMEOUT_S * 0.6)
        started = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        answer = read_answer(sock, 10)
        elapsed = time.monotonic() - started
    _assert_timed_out(answer, elapsed, HEADER_TIMEOUT_S)
    assert elapsed >= HEADER_TIMEOUT_S * 0.95, elapsed


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/v2/transcript", "application/json"),
        ("/api/transcripts", "application/json"),
        ("/v1/chat/completions", "application/json"),
        ("/api/tokens/streaming", "application/json"),
        ("/v2/upload", "application/octet-stream"),  # the body tap
        ("/api/uploads", "application/octet-stream"),  # the body tap
        ("/api/uploads", "multipart/form-data; boundary=b"),  # ASGI path
    ],
)
def test_content_length_longer_than_the_body(
    service: tuple[Proc, str], database_url: str, path: str, content_type: str
) -> None:
    proc, key = service
    declared = 4 * 1024 * 1024
    sent = b"--b\r\n" if content_type.startswith("multipart") else b"{"
    if content_type == "application/octet-stream":
        sent = b"\0" * (256 * 1024)  # past what uvicorn reads before the tap takes over
    elif content_type.startswith("multipart"):
        sent += b'Content-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
        sent += b"\0" * (256 * 1024)
    else:
        declared = 100
    head = _request_head(
        "POST",
        path,
        {"Authorization": key, "Content-Type": content_type, "Content-Length": str(declared)},
    )
    with _connect(proc) as sock:
        sock.sendall(head + sent)
        started = time.monotonic()
        answer = read_answer(sock, 15)
        elapsed = time.monotonic() - started
    _assert_timed_out(answer, elapsed, BODY_IDLE_TIMEOUT_S)
    if "upload" in path:
        # The upstream upload was aborted, not left open (nor recorded as a success).
        assert _last_upload_status(database_url) == "aborted"


def _last_upload_status(database_url: str) -> str | None:
    async def status() -> str | None:
        conn = await asyncpg.connect(plain_url(database_url))
        try:
            value: str | None = await conn.fetchval(
                "SELECT status FROM uploads ORDER BY started_at DESC LIMIT 1"
            )
            return value
        finally:
            await conn.close()

    deadline = time.monotonic() + 10
    while True:
        value = asyncio.run(status())
        if value != "receiving" or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def test_chunked_body_that_stops(service: tuple[Proc, str]) -> None:
    proc, key = service
    head = _request_head(
        "POST",
        "/api/uploads",
        {"Authorization": key, "Content-Type": "audio/wav", "Transfer-Encoding": "chunked"},
    )
    with _connect(proc) as sock:
        sock.sendall(head + b"10000\r\n" + b"\0" * 0x10000 + b"\r\n")
        started = time.monotonic()
        answer = read_answer(sock, 15)
        elapsed = time.monotonic() - started
    _assert_timed_out(answer, elapsed, BODY_IDLE_TIMEOUT_S)


def test_expect_100_continue_without_a_body(service: tuple[Proc, str]) -> None:
    proc, key = service
    head = _request_head(
        "POST",
        "/v2/transcript",
        {
            "Authorization": key,
            "Content-Type": "application/json",
            "Content-Length": "50",
            "Expect": "100-continue",
        },
    )
    with _connect(proc) as sock:
        sock.sendall(head)
        started = time.monotonic()
        answer = read_answer(sock, 15)
        elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), answer
    _assert_timed_out(answer[len(b"HTTP/1.1 100 Continue\r\n\r\n") :], elapsed, BODY_IDLE_TIMEOUT_S)


def test_webhook_body_that_stops(service: tuple[Proc, str]) -> None:
    proc, _ = service
    head = _request_head(
        "POST",
        f"/webhooks/assemblyai/{uuid.uuid4()}",
        {WEBHOOK_AUTH_HEADER: "s" * 32, "Content-Type": "application/json", "Content-Length": "80"},
    )
    with _connect(proc) as sock:
        sock.sendall(head + b'{"transcript_id": ')
        started = time.monotonic()
        answer = read_answer(sock, 15)
        elapsed = time.monotonic() - started
    _assert_timed_out(answer, elapsed, BODY_IDLE_TIMEOUT_S)


def test_slow_but_moving_body_is_not_cut(service: tuple[Proc, str]) -> None:
    """Bytes arriving more often than the idle timeout keep the request alive, however
    long it takes in all."""
    proc, key = service
    body = json.dumps({"audio_url": "https://example.com/a.wav"}).encode()
    head = _request_head(
        "POST",
        "/v2/transcript",
        {
            "Authorization": key,
            "Content-Type": "application/json",
            "Content-Length": str(len(body)),
        },
    )
    with _connect(proc) as sock:
        sock.sendall(head)
        step = max(1, len(body) // 6)
        for i in range(0, len(body), step):
            sock.sendall(body[i : i + step])
            time.sleep(BODY_IDLE_TIMEOUT_S * 0.5)
        answer = read_answer(sock, 10)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]


@pytest.mark.parametrize(
    ("path", "content_type", "sent"),
    [
        ("/v2/transcript", "application/json", b'{"audio_url": '),
        ("/v1/chat/completions", "application/json", b'{"model": '),
        ("/v2/upload", "application/octet-stream", b"\0" * (256 * 1024)),
        ("/api/uploads", "multipart/form-data; boundary=b", b"--b\r\n"),
    ],
)
def test_client_disconnect_mid_body_is_one_info_line(
    service: tuple[Proc, str], path: str, content_type: str, sent: bytes
) -> None:
    proc, key = service
    before = proc.log.read_text()
    head = _request_head(
        "POST",
        path,
        {
            "Authorization": key,
            "Content-Type": content_type,
            "Content-Length": str(4 * 1024 * 1024),
        },
    )
    with _connect(proc) as sock:
        sock.sendall(head + sent)
        time.sleep(0.3)
    time.sleep(1.0)
    new = proc.log.read_text()[len(before) :]
    lines = [json.loads(line) for line in new.splitlines() if line.startswith("{")]
    assert all(line["level"] in {"info", "debug"} for line in lines), new
    assert "Traceback" not in new


def test_no_traceback_in_the_log(service: tuple[Proc, str]) -> None:
    proc, _ = service
    log = proc.log.read_text()
    assert "Traceback" not in log, log[-3000:]
    assert '"level": "error"' not in log, log[-3000:]
