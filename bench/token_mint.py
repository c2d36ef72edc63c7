"""Token minting throughput: our `/v3/token` (key auth, limits, audit all on) against the
integration guide's plain Node token route (no auth, no limits, no audit), both in front of
the same emulator, measured in one run with the same load generator.

    .venv/bin/python bench/token_mint.py [--seconds 20] [--concurrency 64]

Prints `name: value` lines: mints/s and p50/p99 for both, and `ratio` = ours / peer.
Targets: ratio >= 1.0 and our p99 <= 50 ms. `METRICS_ENABLED=false` in the environment
measures without Prometheus metrics (on by default), for the cost per mint of metrics.
Needs node and a Postgres server (TEST_DATABASE_URL / DATABASE_URL, default
postgresql://postgres@127.0.0.1:5432/postgres).
Exits non-zero when it could not measure (a process failed, or over 1% of answers were
not 200).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.live import (  # noqa: E402
    EMULATOR_KEY,
    create_key_in,
    free_port,
    run_emulator,
    run_process,
    run_service,
)
from tests.pg import create_database, drop_database  # noqa: E402

PEER = Path(
    os.environ.get("PEER_SCRIPT", ROOT.parent / "shared" / "peers" / "seed_token_route.mjs")
)

# A small keep-alive HTTP load generator: N loops, each one request at a time, for D s.
LOADGEN = r"""
import http from "node:http";
const [url, seconds, concurrency, auth] = process.argv.slice(2);
const target = new URL(url);
const agent = new http.Agent({ keepAlive: true, maxSockets: Number(concurrency) });
const headers = auth ? { authorization: auth } : {};
const lat = [];
const statuses = {};
let stop = false;
function once() {
  return new Promise((resolve) => {
    const t0 = process.hrtime.bigint();
    const req = http.get(
      {
        host: target.hostname, port: target.port,
        path: target.pathname + target.search, agent, headers,
      },
      (res) => {
        res.resume();
        res.on("end", () => {
          lat.push(Number(process.hrtime.bigint() - t0) / 1e6);
          statuses[res.statusCode] = (statuses[res.statusCode] || 0) + 1;
          resolve();
        });
      },
    );
    req.on("error", () => { statuses.error = (statuses.error || 0) + 1; resolve(); });
  });
}
async function loop() { while (!stop) await once(); }
const started = Date.now();
setTimeout(() => { stop = true; }, Number(seconds) * 1000);
await Promise.all(Array.from({ length: Number(concurrency) }, loop));
const elapsed = (Date.now() - started) / 1000;
lat.sort((a, b) => a - b);
const pct = (p) => (lat.length ? lat[Math.min(lat.length - 1, Math.floor(p * lat.length))] : null);
const summary = { count: lat.length, elapsed, statuses, p50: pct(0.5), p99: pct(0.99) };
console.log(JSON.stringify(summary));
"""


def cpu_seconds(root: int) -> float:
    """User + system CPU of a process and its descendants (Linux /proc), so the cost per
    mint can be compared even when a loaded machine decides the throughput."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        for child, parent in parents.items():
            if parent == pid and child not in tree:
                tree.add(child)
                frontier.append(child)
    return sum(times.get(pid, 0.0) for pid in tree)


def clean_redis(url: str, prefix: str) -> None:
    """Delete the bench's counters (its own prefix only)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        for key in client.scan_iter(match=f"*{prefix}*"):
            client.delete(key)
    finally:
        client.close()


def load(
    url: str, seconds: float, concurrency: int, auth: str | None, script: Path
) -> dict[str, Any]:
    args = ["node", str(script), url, str(seconds), str(concurrency), auth or ""]
    out = subprocess.run(args, check=True, capture_output=True, text=True, timeout=seconds + 60)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


@contextmanager
def database() -> Iterator[str]:
    server = os.environ.get("TEST_DATABASE_URL") or os.environ.get(
        "DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    url = create_database(server)
    try:
        yield url
    finally:
        drop_database(server, url)


def report(name: str, result: dict[str, Any]) -> float:
    rate = result["count"] / result["elapsed"]
    print(f"{name}_mints_per_s: {rate:.0f}")
    print(f"{name}_p50_ms: {result['p50']:.1f}")
    print(f"{name}_p99_ms: {result['p99']:.1f}")
    print(f"{name}_statuses: {json.dumps(result['statuses'], sort_keys=True)}")
    print(f"{name}_cpu_ms_per_mint: {result['cpu_s'] / max(1, result['count']) * 1000:.3f}")
    return rate


def check(name: str, result: dict[str, Any]) -> None:
    ok = result["statuses"].get("200", 0)
    if result["count"] == 0 or ok < 0.99 * (result["count"] + result["statuses"].get("error", 0)):
        raise SystemExit(f"{name}: could not measure, answers were {result['statuses']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="uvicorn workers for ours; above 1 the limits move to Redis (REDIS_URL / "
        "TEST_REDIS_URL, default redis://127.0.0.1:6379/0), as they must be shared",
    )
    opts = parser.parse_args()
    if not PEER.exists():
        raise SystemExit(f"peer script not found: {PEER}")

    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "loadgen.mjs"
        script.write_text(LOADGEN)
        database_url = stack.enter_context(database())
        emulator = stack.enter_context(run_emulator())
        peer_port = free_port()
        peer_proc = stack.enter_context(
            run_process(
                "peer",
                ["node", str(PEER)],
                {"UPSTREAM": emulator.url, "KEY": EMULATOR_KEY, "PORT": str(peer_port)},
                peer_port,
            )
        )
        key = create_key_in(database_url, ["tokens:streaming"], name="bench")
        env = {
            "LOG_LEVEL": "WARNING",
            # Limits on, but high enough that the bench key is never refused.
            "TOKEN_KEY_MINTS_PER_MINUTE": "100000000",
            "TOKEN_KEY_DAILY_SESSION_S": "2000000000",
        }
        if opts.workers > 1:
            env["WEB_CONCURRENCY"] = str(opts.workers)
            env["REDIS_URL"] = os.environ.get("REDIS_URL") or os.environ.get(
                "TEST_REDIS_URL", "redis://127.0.0.1:6379/0"
            )
            env["RATE_LIMIT_KEY_PREFIX"] = f"aaip-bench-{uuid.uuid4().hex[:8]}"
            stack.callback(clean_redis, env["REDIS_URL"], env["RATE_LIMIT_KEY_PREFIX"])
        ours = stack.enter_context(run_service(database_url, emulator.url, env))

        query = "/v3/token?expires_in_seconds=60"
        peer_url = f"http://127.0.0.1:{peer_port}{query}"
        ours_url = f"{ours.url}{query}"
        # Warm both (connection pools, caches), then measure each in turn.
        load(peer_url, opts.warmup, opts.concurrency, None, script)
        load(ours_url, opts.warmup, opts.concurrency, key, script)
        before = cpu_seconds(peer_proc.process.pid)
        peer = load(peer_url, opts.seconds, opts.concurrency, None, script)
        peer["cpu_s"] = cpu_seconds(peer_proc.process.pid) - before
        before = cpu_seconds(ours.process.pid)
        mine = load(ours_url, opts.seconds, opts.concurrency, key, script)
        mine["cpu_s"] = cpu_seconds(ours.process.pid) - before

    check("peer", peer)
    check("ours", mine)
    print(f"concurrency: {opts.concurrency}")
    print(f"workers: {opts.workers}")
    print(f"limits: {'redis' if opts.workers > 1 else 'memory'}")
    print(f"metrics: {os.environ.get('METRICS_ENABLED', 'true')}")
    print(f"seconds: {opts.seconds:.0f}")
    peer_rate = report("peer", peer)
    ours_rate = report("ours", mine)
    print(f"ratio: {ours_rate / peer_rate:.2f}")
    print(f"p99_ms: {mine['p99']:.1f}")


if __name__ == "__main__":
    main()
