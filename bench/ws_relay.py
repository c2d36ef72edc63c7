"""The `/v3/ws` relay under load: N concurrent real-time 16 kHz PCM16 streams (100 ms
frames) for S seconds, first straight to the emulator, then through the relay, in one run.

    .venv/bin/python bench/ws_relay.py [--streams 200] [--seconds 30]

Per-frame latency is measured the same way both times: the client notes CLOCK_MONOTONIC
just before it sends a frame, the emulator notes it when the frame arrives (its session
records, `/_emulator/sessions/{id}`; the clock is system-wide). Each phase has an emulator
of its own, started fresh: one that already holds the other phase's session records
collects garbage for longer (pauses of 30-130 ms), which would be charged to that phase.
Prints `name: value` lines:

- `added_p99_ms`: p99 latency through the relay minus p99 latency direct;
- `relay_cpu_ms_per_stream_s`: the service's CPU time per stream per second of audio;
- `rss_mb`: the service's peak resident memory while all streams were open;
- and the p50/p99 of both runs, the frame counts, the service's RSS before.

Targets: `added_p99_ms` <= 5, `rss_mb` <= 200. Needs a Postgres server (TEST_DATABASE_URL /
DATABASE_URL, default postgresql://postgres@127.0.0.1:5432/postgres). Exits non-zero when
it could not measure: a process failed, a stream did not open or end with `Termination`,
or a frame the client sent is missing from the emulator's records.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import websockets

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.live import EMULATOR_KEY, create_key_in, run_emulator, run_service  # noqa: E402
from tests.pg import create_database, drop_database  # noqa: E402

RATE = 16_000
FRAME_S = 0.1
FRAME = b"\x00\x00" * int(RATE * FRAME_S)  # silence: no recognition work upstream


class CouldNotMeasure(Exception):
    pass


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise CouldNotMeasure("no VmRSS")


class Gate:
    """Frames start together once every stream is open (its Begin received)."""

    def __init__(self, streams: int) -> None:
        self.waiting = streams
        self.open = asyncio.Event()

    async def arrive(self) -> None:
        self.waiting -= 1
        if self.waiting <= 0:
            self.open.set()
        await self.open.wait()


async def one_stream(
    url: str, headers: dict[str, str], seconds: float, offset: float, gate: Gate
) -> tuple[str, list[float]]:
    """Open, send real-time frames, Terminate; (upstream session id, send times)."""
    await asyncio.sleep(offset)
    async with websockets.connect(
        url, additional_headers=headers, compression=None, open_timeout=30, max_queue=None
    ) as ws:
        begin = json.loads(await asyncio.wait_for(ws.recv(), 30))
        if begin.get("type") != "Begin":
            raise CouldNotMeasure(f"expected Begin, got {begin}")
        await gate.arrive()
        sent: list[float] = []
        start = time.monotonic()
        count = int(seconds / FRAME_S)
        for i in range(count):
            delay = start + i * FRAME_S - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            sent.append(time.monotonic())
            await ws.send(FRAME)
        await ws.send(json.dumps({"type": "Terminate"}))
        async with asyncio.timeout(30):
            async for message in ws:
                if isinstance(message, str) and json.loads(message).get("type") == "Termination":
                    break
            else:
                raise CouldNotMeasure("closed without Termination")
        return str(begin["id"]), sent


async def run_phase(
    url: str, headers: dict[str, str], streams: int, seconds: float, pid: int | None
) -> tuple[list[tuple[str, list[float]]], float, float]:
    """All streams at once: (results, peak service RSS (MB), service CPU seconds used)."""
    gate = Gate(streams)
    tasks = [
        asyncio.create_task(one_stream(url, headers, seconds, (i % 10) * 0.01, gate))
        for i in range(streams)
    ]
    peak = 0.0
    cpu_before = cpu_seconds(pid) if pid else 0.0

    async def sample() -> None:
        nonlocal peak
        while True:
            if pid:
                peak = max(peak, rss_mb(pid))
            await asyncio.sleep(0.25)

    sampler = asyncio.create_task(sample())
    # A stream that fails before its Begin must not hold the others at the gate.
    for task in tasks:
        task.add_done_callback(lambda t: gate.open.set() if t.exception() else None)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    sampler.cancel()
    cpu_used = (cpu_seconds(pid) - cpu_before) if pid else 0.0
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise CouldNotMeasure(f"{len(errors)} of {streams} streams failed: {errors[0]!r}")
    return [r for r in results if not isinstance(r, BaseException)], peak, cpu_used


def latencies(emulator_url: str, results: list[tuple[str, list[float]]]) -> list[float]:
    out: list[float] = []
    with httpx.Client(base_url=emulator_url, timeout=60) as client:
        for session_id, sent in results:
            record = client.get(f"/_emulator/sessions/{session_id}").json()
            arrived = [f["at"] for f in record.get("frames", []) if f["kind"] == "binary"]
            if len(arrived) != len(sent):
                raise CouldNotMeasure(
                    f"session {session_id}: sent {len(sent)} frames, upstream got {len(arrived)}"
                )
            out.extend((a - s) * 1000 for a, s in zip(arrived, sent, strict=True))
    return out


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    server = os.environ.get(
        "TEST_DATABASE_URL",
        os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    with ExitStack() as stack:
        database_url = create_database(server)
        stack.callback(drop_database, server, database_url)
        emulator_env = {
            "EMULATOR_MAX_CONCURRENT_SESSIONS": str(args.streams + 10),
            "EMULATOR_RECOGNITION": "placeholder",
        }
        emulator = stack.enter_context(run_emulator(emulator_env))  # direct
        upstream = stack.enter_context(run_emulator(emulator_env))  # behind the relay
        service = stack.enter_context(
            run_service(
                database_url,
                upstream.url,
                {
                    "WS_RELAY_KEY_MAX_SESSIONS": "0",
                    "WS_RELAY_END_USER_MAX_SESSIONS": "0",
                    "TOKEN_KEY_DAILY_SESSION_S": "0",
                    "LOG_LEVEL": "WARNING",
                    "ACCESS_LOG": "false",
                },
            )
        )
        key = create_key_in(database_url, ["tokens:streaming"], name="bench ws relay")
        query = f"/v3/ws?sample_rate={RATE}&speech_model=u3-rt-pro"
        direct_url = emulator.url.replace("http://", "ws://") + query
        relay_url = service.url.replace("http://", "ws://") + query
        pid = service.process.pid
        try:
            direct, _, _ = asyncio.run(
                run_phase(
                    direct_url, {"Authorization": EMULATOR_KEY}, args.streams, args.seconds, None
                )
            )
            rss_before = rss_mb(pid)
            relayed, peak, cpu = asyncio.run(
                run_phase(relay_url, {"Authorization": key}, args.streams, args.seconds, pid)
            )
            direct_ms = latencies(emulator.url, direct)
            relay_ms = latencies(upstream.url, relayed)
        except CouldNotMeasure as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except Exception as exc:
            print(f"error: could not measure: {exc!r}", file=sys.stderr)
            return 1
    audio_stream_s = args.streams * args.seconds
    print(f"streams: {args.streams}")
    print(f"seconds: {args.seconds:g}")
    print(f"frames_direct: {len(direct_ms)}")
    print(f"frames_relay: {len(relay_ms)}")
    print(f"direct_p50_ms: {pct(direct_ms, 0.5):.2f}")
    print(f"direct_p99_ms: {pct(direct_ms, 0.99):.2f}")
    print(f"relay_p50_ms: {pct(relay_ms, 0.5):.2f}")
    print(f"relay_p99_ms: {pct(relay_ms, 0.99):.2f}")
    print(f"added_p99_ms: {pct(relay_ms, 0.99) - pct(direct_ms, 0.99):.2f}")
    print(f"relay_cpu_ms_per_stream_s: {cpu * 1000 / audio_stream_s:.3f}")
    print(f"rss_before_mb: {rss_before:.1f}")
    print(f"rss_mb: {peak:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
