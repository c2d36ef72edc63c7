"""SSE fan-out: one job completion reaching 2,000 live subscribers on one instance.

A real service process on a fresh Postgres database. 2,000 clients open
`GET /api/transcripts/{id}/events` on one job and read its first (snapshot) event; then
the completion is published exactly as the reconciler publishes it (`publish_job_event`:
version bump, persisted row, NOTIFY on commit) from this process, and the time from the
commit to each subscriber's receipt of the `completed` event is recorded. The instance
holds one LISTEN connection and fans out in process.

Baseline in the same run: the same measurement with a single subscriber (ratio = p95 with
2,000 over p95 with one), and the service's RSS while idle.

Prints `name: value` lines; exits 1 when it could not measure (a subscriber failed to
connect or never received the completion).

    .venv/bin/python bench/sse_fanout.py [--subscribers 2000]

Uses TEST_DATABASE_URL (a server it may create a database on) or an embedded Postgres.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from pathlib import Path

import aiohttp
import uvloop

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import app.models  # noqa: E402, F401 - every table, so foreign keys resolve
from app.core.db import create_engine, create_sessionmaker  # noqa: E402
from app.transcripts.models import Job  # noqa: E402
from app.transcripts.views import job_view  # noqa: E402
from app.webhooks.events import publish_job_event  # noqa: E402
from tests.e2e.webhooks_support import insert_jobs, key_id_of  # noqa: E402
from tests.live import create_key_in, run_service  # noqa: E402
from tests.pg import create_database, drop_database, postgres_server  # noqa: E402

ENV = {
    "LOG_LEVEL": "WARNING",
    "SSE_FINAL_GRACE_S": "2",
    "SSE_HEARTBEAT_S": "15",
    # Nothing for the reconciler to do here; its idle ticks stay out of the measurement.
    "RECONCILER_ENABLED": "false",
}


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for {pid}")


def cpu_ms(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks * 1000 / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


async def subscriber(
    session: aiohttp.ClientSession,
    url: str,
    key: str,
    ready: asyncio.Event,
    arrivals: list[float],
    connected: list[int],
) -> None:
    # Reads whatever arrived and looks for frame markers: the client must stay cheap, or
    # 2,000 of them in one process measure the client instead of the server.
    async with session.get(url, headers={"Authorization": key}) as response:
        if response.status != 200:
            raise RuntimeError(f"subscriber got {response.status}")
        buffer = b""
        seen_first = False
        while True:
            chunk = await response.content.readany()
            if not chunk:
                return
            buffer += chunk
            if b"event: completed" in buffer:
                arrivals.append(time.perf_counter())
                return
            if not seen_first and b"\r\n\r\n" in buffer:
                seen_first = True
                buffer = b""
                connected.append(1)
                if len(connected) >= ready_target[0]:
                    ready.set()


ready_target = [0]


async def measure(
    base: str, key: str, database: str, job_id: uuid.UUID, n: int, pid: int
) -> tuple[list[float], float, int, float]:
    """Latencies (ms) of the completion at each of `n` subscribers, RSS with them connected."""
    url = f"{base}/api/transcripts/{job_id}/events"
    arrivals: list[float] = []
    connected: list[int] = []
    ready = asyncio.Event()
    ready_target[0] = n
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks = []
        for start in range(0, n, 100):  # connect in waves, as browsers would trickle in
            for _ in range(min(100, n - start)):
                tasks.append(
                    asyncio.create_task(subscriber(session, url, key, ready, arrivals, connected))
                )
            while len(connected) < len(tasks) and not any(t.done() for t in tasks):
                await asyncio.sleep(0.01)
        await asyncio.wait_for(ready.wait(), 120)
        rss_connected = rss_mb(pid)
        engine = create_engine(database, pool_size=1)
        try:
            async with create_sessionmaker(engine)() as db, db.begin():
                job = await db.get(Job, job_id)
                assert job is not None
                job.status = "completed"
                await publish_job_event(db, job, job.status, job_view(job))
                cpu_before = cpu_ms(pid)
                published = time.perf_counter()  # NOTIFY leaves with the commit below
        finally:
            pass
        await engine.dispose()
        await asyncio.wait(tasks, timeout=60)
        fanout_cpu = cpu_ms(pid) - cpu_before
        errors = sum(1 for t in tasks if t.done() and t.exception() is not None)
        for t in tasks:
            t.cancel()
    return [(a - published) * 1000 for a in arrivals], rss_connected, errors, fanout_cpu


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscribers", type=int, default=2000)
    args = parser.parse_args()
    n = args.subscribers

    with postgres_server() as server:
        database = create_database(server)
        try:
            raw = create_key_in(database, ["transcripts"], name="bench")
            key_id = key_id_of(database, raw)
            one, many = insert_jobs(
                database, key_id, ["sse-one", "sse-many"], secret="x", status="processing"
            )
            with run_service(database, "http://127.0.0.1:9", ENV) as service:
                pid = service.process.pid
                time.sleep(1.0)
                rss_idle = rss_mb(pid)
                base_lat, _, base_errors, _ = uvloop.run(
                    measure(service.url, raw, database, one, 1, pid)
                )
                lat, rss_connected, errors, fanout_cpu = uvloop.run(
                    measure(service.url, raw, database, many, n, pid)
                )
                rss_peak = rss_mb(pid, "VmHWM")
        finally:
            drop_database(server, database)

    if not base_lat or base_errors:
        print("error: the single-subscriber baseline could not be measured", file=sys.stderr)
        return 1
    print(f"subscribers: {n}")
    print(f"received: {len(lat)}")
    print(f"errors: {errors}")
    if not lat:
        print("error: no subscriber received the completion", file=sys.stderr)
        return 1
    p95 = percentile(lat, 95)
    b95 = percentile(base_lat, 95)
    print(f"p50_ms: {percentile(lat, 50):.1f}")
    print(f"p95_ms: {p95:.1f}")
    print(f"max_ms: {max(lat):.1f}")
    print(f"server_cpu_ms_for_fanout: {fanout_cpu:.0f}")
    print(f"baseline_single_subscriber_ms: {b95:.1f}")
    print(f"ratio: {p95 / b95:.2f}")
    print(f"rss_idle_mb: {rss_idle:.0f}")
    print(f"rss_mb: {rss_connected:.0f}")
    print(f"rss_peak_mb: {rss_peak:.0f}")
    print(f"target_p95_ms: 250 ({'met' if p95 <= 250 else 'missed'})")
    print(f"target_rss_mb: 300 ({'met' if rss_peak <= 300 else 'missed'})")
    return 0 if len(lat) == n and errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
