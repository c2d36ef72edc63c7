"""Is the emulator ever the bottleneck? Upload sink throughput and /v3/token mint rate.

1. 1 GiB POSTed with curl (`-T`, streamed from a file) to the emulator's upload sink
   (`EMULATOR_UPLOAD_SINK=true`: counted and SHA-256 hashed, nothing stored) and, in the
   same run, to a bare Starlette endpoint under the same uvicorn that only counts bytes.
   Runs alternate between the two; the best of 3 each. `ratio` = emulator / bare
   throughput (target >= 0.95).
2. `GET /v3/token` at 64 concurrent keep-alive connections for a few seconds from a lean
   asyncio HTTP/1.1 client (a heavier client would measure itself): `mints_per_s`
   (target >= 5000).

Usage: .venv/bin/python bench/emulator_sink.py [--gib 1] [--runs 3] [--seconds 4]
Prints `name: value` lines; exits 1 when it could not measure.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEY = "bench-emulator-key"


def bare_app():  # type: ignore[no-untyped-def]
    """The baseline: a Starlette endpoint that reads the body and counts its bytes."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def count(request: Request) -> JSONResponse:
        total = 0
        async for chunk in request.stream():
            total += len(chunk)
        return JSONResponse({"bytes": total})

    return Starlette(routes=[Route("/v2/upload", count, methods=["POST"])])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def start_emulator(port: int, data_dir: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "EMULATOR_API_KEY": KEY,
        "EMULATOR_TEST_MODE": "true",
        "EMULATOR_UPLOAD_SINK": "true",
        "EMULATOR_DATA_DIR": data_dir,
    }
    args = [sys.executable, "-m", "emulator", "--port", str(port)]
    return subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)


def start_bare(port: int) -> subprocess.Popen[bytes]:
    # The same uvicorn defaults the emulator's `run` uses (auto loop and HTTP parser).
    args = [sys.executable, str(Path(__file__).resolve()), "--serve-bare", str(port)]
    return subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL)


def curl_upload(url: str, path: Path) -> float:
    """Seconds to POST the file (streamed by curl, no Expect: 100-continue round trip)."""
    result = subprocess.run(
        [
            "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{time_total}",
            "-X", "POST", "-T", str(path),
            "-H", f"Authorization: {KEY}", "-H", "Content-Type: application/octet-stream",
            "-H", "Expect:", url,
        ],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    status, seconds = result.stdout.split()
    if status != "200":
        raise RuntimeError(f"upload answered {status}")
    return float(seconds)


async def mint_load(port: int, seconds: float, concurrency: int) -> tuple[int, int]:
    """(successful mints, failures) from `concurrency` keep-alive connections."""
    request = (
        f"GET /v3/token?expires_in_seconds=60 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: {KEY}\r\n\r\n"
    ).encode()
    ok = 0
    failed = 0
    stop_at = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal ok, failed
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.monotonic() < stop_at:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                body = await reader.readexactly(length)
                if head.startswith(b"HTTP/1.1 200") and b'"token"' in body:
                    ok += 1
                else:
                    failed += 1
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ok, failed


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--serve-bare", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        import uvicorn

        uvicorn.run(bare_app(), host="127.0.0.1", port=args.serve_bare, log_level="warning")
        return 0

    size = int(args.gib * 1024**3)
    emu_port, bare_port = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="emulator-sink-") as tmp:
        path = Path(tmp) / "payload.bin"
        with path.open("wb") as out:  # pseudo-random MiB repeated: not sparse, not all zeros
            block = os.urandom(1024 * 1024)
            for _ in range(size // len(block)):
                out.write(block)
            out.write(block[: size % len(block)])
        emulator = start_emulator(emu_port, tmp)
        bare = start_bare(bare_port)
        try:
            wait_port(emu_port, emulator)
            wait_port(bare_port, bare)
            emu_url = f"http://127.0.0.1:{emu_port}/v2/upload"
            bare_url = f"http://127.0.0.1:{bare_port}/v2/upload"
            emu_times, bare_times = [], []
            for _ in range(args.runs):
                emu_times.append(curl_upload(emu_url, path))
                bare_times.append(curl_upload(bare_url, path))
            # The emulator really hashed what it got: compare with our own digest.
            with urllib.request.urlopen(f"http://127.0.0.1:{emu_port}/_emulator/uploads") as r:
                uploads = json.load(r)
            digest = hashlib.sha256()
            with path.open("rb") as f:
                while chunk := f.read(8 * 1024 * 1024):
                    digest.update(chunk)
            if not uploads or any(
                u["bytes"] != size or u["sha256"] != digest.hexdigest() for u in uploads
            ):
                print("error: the emulator's upload records do not match the payload")
                return 1
            mib = size / 1024**2
            emu_best, bare_best = min(emu_times), min(bare_times)
            print(f"emulator_mib_s: {mib / emu_best:.1f}")
            print(f"bare_mib_s: {mib / bare_best:.1f}")
            print(f"ratio: {bare_best / emu_best:.3f}")

            asyncio.run(mint_load(emu_port, 0.5, args.concurrency))  # warm-up
            ok, failed = asyncio.run(mint_load(emu_port, args.seconds, args.concurrency))
            if ok == 0:
                print(f"error: no token minted ({failed} failures)")
                return 1
            print(f"mints_per_s: {ok / args.seconds:.0f}")
            print(f"mint_failures: {failed}")
        finally:
            for proc in (emulator, bare):
                proc.terminate()
                proc.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
