"""Request bodies read straight off ASGI: coalescing, limits, disconnects, forms."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from app.core.errors import BadRequest, PayloadTooLarge
from app.uploads.streaming import ClientDisconnected, MultipartBody, RawBody

Receive = Callable[[], Awaitable[dict[str, Any]]]


def scripted(chunks: list[bytes], *, disconnect: bool = False) -> tuple[Receive, list[int]]:
    """An ASGI receive that hands out `chunks`, then ends (or reports a disconnect)."""
    calls = [0]

    async def receive() -> dict[str, Any]:
        i = calls[0]
        calls[0] += 1
        if i < len(chunks):
            more = i < len(chunks) - 1 or disconnect
            return {"type": "http.request", "body": chunks[i], "more_body": more}
        if disconnect:
            return {"type": "http.disconnect"}
        raise AssertionError("receive() called after the end of the body")

    return receive, calls


async def consume(body: RawBody | MultipartBody) -> None:
    async for _ in body:
        pass


async def drain(body: RawBody | MultipartBody) -> list[bytes]:
    await body.start()
    return [chunk async for chunk in body]


async def test_raw_body_is_coalesced_into_large_chunks_without_loss() -> None:
    pieces = [bytes([i % 256]) * 1000 for i in range(25)]
    receive, _ = scripted(pieces)
    body = RawBody(receive, limit=10**9, chunk_size=4096)
    out = await drain(body)
    assert b"".join(out) == b"".join(pieces)
    assert all(len(c) >= 4096 for c in out[:-1])
    assert body.sent == 25_000
    assert body.complete


async def test_raw_body_passes_a_large_chunk_through_without_copying() -> None:
    big = b"x" * 10_000
    receive, _ = scripted([big])
    out = await drain(RawBody(receive, limit=10**9, chunk_size=4096))
    assert out[0] is big


async def test_empty_raw_body_is_refused_before_anything_is_yielded() -> None:
    receive, _ = scripted([b"", b""])
    body = RawBody(receive, limit=100, chunk_size=10)
    with pytest.raises(BadRequest, match="empty"):
        await body.start()


async def test_raw_body_over_the_limit_fails_while_streaming() -> None:
    receive, calls = scripted([b"a" * 60, b"b" * 60, b"c" * 60])
    body = RawBody(receive, limit=100, chunk_size=50)
    await body.start()
    with pytest.raises(PayloadTooLarge):
        await consume(body)
    assert isinstance(body.failure, PayloadTooLarge)
    assert calls[0] == 2  # stopped reading at the chunk that crossed the limit
    assert not body.complete


async def test_disconnect_mid_body_is_reported_and_marks_the_body_incomplete() -> None:
    receive, _ = scripted([b"a" * 10, b"b" * 10], disconnect=True)
    body = RawBody(receive, limit=1000, chunk_size=5)
    await body.start()
    with pytest.raises(ClientDisconnected):
        await consume(body)
    assert isinstance(body.failure, ClientDisconnected)
    assert not body.complete


def form(parts: list[tuple[str, bytes, str | None]], boundary: str = "XyZ") -> bytes:
    out = b""
    for name, value, filename in parts:
        disposition = f'form-data; name="{name}"'
        if filename:
            disposition += f'; filename="{filename}"'
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n".encode()
        if filename:
            out += b"Content-Type: audio/wav\r\n"
        out += b"\r\n" + value + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


HEADERS = {"content-type": "multipart/form-data; boundary=XyZ"}


def split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


async def test_multipart_file_is_streamed_and_fields_before_it_are_read_first() -> None:
    audio = bytes(range(256)) * 100
    data = form([("config", b'{"speaker_labels": true}', None), ("file", audio, "a.wav")])
    receive, _ = scripted(split(data, 777))
    body = MultipartBody(receive, HEADERS, limit=10**6, chunk_size=4096, fields=("config",))
    await body.start()
    assert body.json_field("config") == {"speaker_labels": True}
    assert body.filename == "a.wav"
    out = [c async for c in body]
    assert b"".join(out) == audio
    assert body.sent == len(audio)
    assert body.complete


async def test_multipart_without_file_or_with_empty_file_is_refused() -> None:
    receive, _ = scripted([form([("other", b"x", None)])])
    with pytest.raises(BadRequest, match="file"):
        await MultipartBody(receive, HEADERS, limit=100, chunk_size=10).start()
    receive, _ = scripted([form([("file", b"", "a.wav")])])
    with pytest.raises(BadRequest, match="empty"):
        await MultipartBody(receive, HEADERS, limit=100, chunk_size=10).start()


async def test_multipart_file_over_the_limit_fails_while_streaming() -> None:
    data = form([("file", b"z" * 5000, "a.wav")])
    receive, _ = scripted(split(data, 1000))
    body = MultipartBody(receive, HEADERS, limit=3000, chunk_size=512)
    await body.start()
    with pytest.raises(PayloadTooLarge):
        await consume(body)


async def test_multipart_field_after_the_file_is_refused_at_the_end() -> None:
    data = form([("file", b"audio" * 100, "a.wav"), ("config", b"{}", None)])
    receive, _ = scripted([data])
    body = MultipartBody(receive, HEADERS, limit=10**6, chunk_size=64, fields=("config",))
    await body.start()
    with pytest.raises(BadRequest, match="before the file"):
        await consume(body)


async def test_truncated_multipart_body_is_refused() -> None:
    for size in (500, 50_000):  # held back by the parser, or already streaming
        data = form([("file", b"audio" * (size // 5), "a.wav")])[:-40]
        receive, _ = scripted(split(data, 4096))
        body = MultipartBody(receive, HEADERS, limit=10**6, chunk_size=64)
        with pytest.raises(BadRequest, match="ended before"):
            await drain(body)
        assert not body.complete


def test_form_without_boundary_is_a_bad_request() -> None:
    receive, _ = scripted([b""])
    with pytest.raises(BadRequest):
        MultipartBody(receive, {"content-type": "multipart/form-data"}, limit=1, chunk_size=1)
