"""CPU the Prometheus metrics add to one token mint, timed in process.

    .venv/bin/python bench/metrics_cost.py

A mint records three things: the request (route, method, status, latency), the upstream
call (host, route, outcome, latency) and the mint's outcome. This times exactly those calls
(app/metrics), best of 5 rounds of 20,000, in prometheus-client's single-process mode and in
its multiprocess mode (a child process with PROMETHEUS_MULTIPROC_DIR set, as
`aai-proxy serve --workers N` runs). Prints `name: value` lines; exits non-zero when a
child fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def measure() -> float:
    from app.metrics import TOKEN_MINTS, UpstreamCall, labelled, observe_request

    def one_mint() -> None:
        observe_request("/v3/token", "GET", 200, 0.003)
        with UpstreamCall("streaming", "/v3/token?expires_in_seconds=60") as call:
            call.status = 200
        labelled(TOKEN_MINTS, "streaming", "granted").inc()

    for _ in range(1000):
        one_mint()
    best = float("inf")
    for _ in range(5):
        n = 20_000
        started = time.process_time()
        for _ in range(n):
            one_mint()
        best = min(best, (time.process_time() - started) / n)
    return best * 1e6


def main() -> None:
    if "--child" in sys.argv:
        print(f"{measure():.2f}")
        return
    single = subprocess.run(
        [sys.executable, __file__, "--child"],
        env={k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"},
        check=True,
        capture_output=True,
        text=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        multi = subprocess.run(
            [sys.executable, __file__, "--child"],
            env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": tmp},
            check=True,
            capture_output=True,
            text=True,
        )
    print(f"metrics_us_per_mint_single_process: {float(single.stdout):.1f}")
    print(f"metrics_us_per_mint_multiprocess: {float(multi.stdout):.1f}")


if __name__ == "__main__":
    main()
