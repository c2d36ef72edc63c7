"""Which HTTP transport should the upstream client use? Measured, not guessed.

A FastAPI route passes one GET through to a local upstream (a tiny aiohttp server, its own
process) while a load generator keeps 64 requests in flight against the route. Three
variants of the route's client, one after the other in the same run:

  httpx_default   httpx.AsyncClient() with its default transport (httpcore)
  httpx_aiohttp   httpx.AsyncClient over our make_transport(): httpx-aiohttp's AiohttpTransport
  aiohttp         a plain aiohttp.ClientSession (the ceiling)

Prints `name: value` lines (req/s and p99 per variant) and `ratio` = httpx_aiohttp req/s
over httpx_default req/s. Exits 1 when a variant could not be measured.

    .venv/bin/python bench/upstream_client.py [--seconds 5] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("httpx_default", "httpx_aiohttp", "aiohttp")
BODY = b'{"id":"5552493-16d8-42d8-8feb-c2a16b56f6e8","status":"completed","text":"hello"}'


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --- the upstream: a tiny aiohttp server ---------------------------------------------------


def run_upstream(port: int) -> None:
    from aiohttp import web

    async def transcript(_: web.Request) -> web.Response:
        return web.Response(body=BODY, content_type="application/json")

    app = web.Application()
    app.router.add_get("/v2/transcript/{id}", transcript)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


# --- the route under test ------------------------------------------------------------------


def run_proxy(variant: str, port: int, upstream: str) -> None:
    import httpx
    import uvicorn
    from fastapi import FastAPI, Response

    from app.core.config import Settings
    from app.upstream.transport import make_transport

    state: dict[str, object] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if variant == "aiohttp":
            session = aiohttp.ClientSession(
                base_url=upstream, connector=aiohttp.TCPConnector(limit=200)
            )
            state["session"] = session
            yield
            await session.close()
            return
        if variant == "httpx_default":
            client = httpx.AsyncClient(base_url=upstream)
        else:
            settings = Settings(_env_file=None, upstream_transport="aiohttp")  # type: ignore[call-arg]
            client = httpx.AsyncClient(
                base_url=upstream, transport=make_transport(settings.upstream)
            )
        state["client"] = client
        yield
        await client.aclose()

    app = FastAPI(lifespan=lifespan)

    if variant == "aiohttp":

        @app.get("/v2/transcript/{transcript_id}")
        async def via_aiohttp(transcript_id: str) -> Response:
            session = state["session"]
            assert isinstance(session, aiohttp.ClientSession)
            async with session.get(f"/v2/transcript/{transcript_id}") as resp:
                return Response(
                    await resp.read(), status_code=resp.status, media_type="application/json"
                )

    else:

        @app.get("/v2/transcript/{transcript_id}")
        async def via_httpx(transcript_id: str) -> Response:
            client = state["client"]
            assert isinstance(client, httpx.AsyncClient)
            resp = await client.get(f"/v2/transcript/{transcript_id}")
            return Response(
                resp.content, status_code=resp.status_code, media_type="application/json"
            )

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# --- the load generator --------------------------------------------------------------------


async def load(url: str, concurrency: int, seconds: float) -> tuple[int, int, list[float]]:
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one() -> None:
            nonlocal errors
            started = time.perf_counter()
            try:
                async with session.get(url) as resp:
                    await resp.read()
                    ok = resp.status == 200
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            if ok:
                latencies.append(time.perf_counter() - started)
            else:
                errors += 1

        # Warm-up: fill the pools, let the JIT-less interpreter settle.
        await asyncio.gather(*(one() for _ in range(concurrency * 2)))
        latencies.clear()
        errors = 0

        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < deadline:
                await one()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return int(len(latencies) / elapsed), errors, latencies


def p99_ms(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def spawn(*args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, __file__, *args], env=env, cwd=ROOT)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--role", choices=["bench", "upstream", "proxy"], default="bench")
    parser.add_argument("--variant", choices=VARIANTS)
    parser.add_argument("--port", type=int)
    parser.add_argument("--upstream")
    args = parser.parse_args()

    if args.role == "upstream":
        run_upstream(args.port)
        return 0
    if args.role == "proxy":
        run_proxy(args.variant, args.port, args.upstream)
        return 0

    upstream_port = free_port()
    upstream = spawn("--role", "upstream", "--port", str(upstream_port))
    results: dict[str, tuple[int, int, list[float]]] = {}
    try:
        wait_port(upstream_port, upstream)
        for variant in VARIANTS:
            port = free_port()
            proxy = spawn(
                "--role",
                "proxy",
                "--variant",
                variant,
                "--port",
                str(port),
                "--upstream",
                f"http://127.0.0.1:{upstream_port}",
            )
            try:
                wait_port(port, proxy)
                url = f"http://127.0.0.1:{port}/v2/transcript/abc"
                results[variant] = asyncio.run(load(url, args.concurrency, args.seconds))
            finally:
                stop(proxy)
    finally:
        stop(upstream)

    print(f"concurrency: {args.concurrency}")
    print(f"seconds_per_variant: {args.seconds:g}")
    failed = False
    for variant, (rps, errors, latencies) in results.items():
        if not latencies or errors > len(latencies) // 100:
            print(f"{variant}_error: {errors} failed, {len(latencies)} ok", file=sys.stderr)
            failed = True
            continue
        print(f"{variant}_rps: {rps}")
        print(f"{variant}_p99_ms: {p99_ms(latencies):.1f}")
        print(f"{variant}_errors: {errors}")
    if failed or len(results) != len(VARIANTS):
        return 1
    ratio = results["httpx_aiohttp"][0] / max(1, results["httpx_default"][0])
    print(f"ratio: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
