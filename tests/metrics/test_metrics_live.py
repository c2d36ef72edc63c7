"""`/metrics` of real service processes: several workers add up (multiprocess mode), and
`METRICS_PORT` moves the page to a port of its own."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.identity.scopes import ALL_SCOPES
from tests.live import Proc, create_key_in, free_port, run_process, service_env

pytestmark = pytest.mark.e2e


def sample(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


def served_by(multiproc: Path, route: str) -> set[str]:
    """The worker pids whose value files hold requests of `route` (files of a worker appear
    when it imports the metrics, so only their content shows that it served)."""
    from prometheus_client.mmap_dict import MmapedDict

    pids = set()
    for path in multiproc.glob("histogram_*.db"):
        for key, value, *_ in MmapedDict.read_all_values_from_file(str(path)):
            name, _sample, labels, _help = json.loads(key)
            if name == "aai_http_request_duration_seconds" and labels.get("route") == route:
                if value > 0:
                    pids.add(path.stem.rsplit("_", 1)[1])
    return pids


def until_both_served(send: Callable[[], int], multiproc: Callable[[], Path], route: str) -> int:
    """Send batches until two workers have served `route` (the second may still be starting
    when the first batch comes); returns how many requests were sent."""
    sent, deadline = 0, time.monotonic() + 120
    with ThreadPoolExecutor(12) as pool:
        while True:
            statuses = list(pool.map(lambda _: send(), range(24)))
            assert set(statuses) == {200}, statuses
            sent += len(statuses)
            if len(served_by(multiproc(), route)) >= 2:
                return sent
            assert time.monotonic() < deadline, "the second worker never served"


def uvicorn_args(port: int, workers: int) -> list[str]:
    return [
        sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory",
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
        "--log-level", "warning", "--http", "app.core.http_server:TapProtocol",
    ]  # fmt: skip


def test_two_workers_add_up(
    make_database: Callable[..., str], emulator: Proc, tmp_path: Path
) -> None:
    url = make_database()
    raw = create_key_in(url, ALL_SCOPES)
    port = free_port()
    multiproc = tmp_path / "prom"
    multiproc.mkdir()
    env = {
        **service_env(url, emulator.url, port),
        "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
        "ACCESS_LOG": "false",
        # Batches until both workers served: never refused by the limits.
        "TOKEN_KEY_MINTS_PER_MINUTE": "100000",
        "TOKEN_KEY_DAILY_SESSION_S": "2000000000",
    }

    def mint() -> int:
        # A fresh connection each: the kernel spreads them over both workers.
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
            return c.get(
                "/v3/token?expires_in_seconds=60", headers={"Authorization": raw}
            ).status_code

    with run_process("service-2w", uvicorn_args(port, 2), env, port, timeout=60):
        mints = until_both_served(mint, lambda: multiproc, "/v3/token")
        for _ in range(4):  # whichever worker answers the scrape, all are counted
            page = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
            labels = {"route": "/v3/token", "method": "GET", "status": "200"}
            assert sample(page, "aai_http_request_duration_seconds_count", **labels) == mints
            assert (
                sample(page, "aai_token_mints_total", kind="streaming", outcome="granted") == mints
            )
            upstream = sample(
                page, "aai_upstream_request_duration_seconds_count",
                host="streaming", route="/v3/token", outcome="2xx",
            )  # fmt: skip
            assert upstream == mints


def test_metrics_port_serves_metrics_apart(
    make_database: Callable[..., str], emulator: Proc
) -> None:
    url = make_database()
    port, metrics_port = free_port(), free_port()
    env = {
        **service_env(url, emulator.url, port),
        "METRICS_PORT": str(metrics_port),
        "METRICS_TOKEN": "scrape-secret-123",
        "MIGRATE_ON_START": "false",
    }
    from tests.live import run_service

    with run_service(url, emulator.url, env=env, port=port):
        assert httpx.get(f"http://127.0.0.1:{port}/metrics").status_code == 404
        target = f"http://127.0.0.1:{metrics_port}/metrics"
        assert httpx.get(target).status_code == 401
        page = httpx.get(target, headers={"Authorization": "Bearer scrape-secret-123"})
        assert page.status_code == 200
        assert "aai_reconciler_queue_depth" in page.text
        assert "aai_http_request_duration_seconds" in page.text


def test_serve_with_workers_sets_multiprocess_mode_itself(
    make_database: Callable[..., str], tmp_path: Path
) -> None:
    """`aai-proxy serve --workers 2` with no PROMETHEUS_MULTIPROC_DIR: every scrape, whichever
    worker answers it, counts the requests of both (and the directory goes at exit)."""
    url = make_database()
    port = free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "TMPDIR": str(tmp_path),
        "APP_ENV": "test",
        "DATABASE_URL": url,
        "ASSEMBLYAI_API_KEY": "a-key-never-used-123",
        "LOG_LEVEL": "WARNING",
        "ACCESS_LOG": "false",
    }
    aai_proxy = str(Path(sys.executable).parent / "aai-proxy")
    args = [aai_proxy, "serve", "--port", str(port), "--workers", "2"]

    def health() -> int:
        with httpx.Client(timeout=10) as c:
            return c.get(f"http://127.0.0.1:{port}/healthz").status_code

    def multiproc() -> Path:
        (found,) = tmp_path.glob("aai-proxy-metrics-*")
        return found

    with run_process("serve-2w", args, env, port, timeout=90):
        requests = until_both_served(health, multiproc, "/healthz")
        labels = {"route": "/healthz", "method": "GET", "status": "200"}
        for _ in range(4):
            page = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
            assert sample(page, "aai_http_request_duration_seconds_count", **labels) == requests
    assert not list(tmp_path.glob("aai-proxy-metrics-*"))


def test_a_job_flow_shows_in_the_metrics(make_database: Callable[..., str], emulator: Proc) -> None:
    """Upload, submit, AssemblyAI's webhook, the reconciler's final fetch, an LLM call: each
    leaves its mark (against the real emulator; the job is never read by a caller, so the
    reconciler is what finalises it)."""
    from tests.e2e.webhooks_support import db, key_id_of, wait_until
    from tests.live import run_service
    from tests.transcripts.harness import wav_bytes

    url = make_database()
    raw = create_key_in(url, ALL_SCOPES)
    key_id = str(key_id_of(url, raw))
    audio = wav_bytes(0.5)
    env = {"RECONCILER_TICK_S": "0.2", "RECONCILER_POLL_SCHEDULE_S": "30"}
    headers = {"Authorization": raw}
    with run_service(url, emulator.url, env=env) as service, httpx.Client(timeout=30) as client:
        upload = client.post(f"{service.url}/v2/upload", content=audio, headers=headers)
        assert upload.status_code == 200, upload.text
        submit = client.post(
            f"{service.url}/v2/transcript",
            json={"audio_url": upload.json()["upload_url"]},
            headers=headers,
        )
        assert submit.status_code == 200, submit.text
        upstream_id = submit.json()["id"]

        def final() -> bool:
            row = db(
                url,
                lambda c: c.fetchrow(
                    "SELECT status, webhook_received_at FROM jobs WHERE upstream_id = $1",
                    upstream_id,
                ),
            )
            return bool(row and row["status"] == "completed" and row["webhook_received_at"])

        wait_until(final, 30, "completion after the webhook")
        chat = client.post(
            f"{service.url}/v1/chat/completions",
            json={
                "model": "claude-haiku-4-5-20251001",
                "messages": [{"role": "user", "content": "Say hi"}],
                "max_tokens": 20,
            },
            headers=headers,
        )
        assert chat.status_code == 200, chat.text
        page = client.get(f"{service.url}/metrics").text

    assert sample(page, "aai_upload_bytes_total", status="completed") == len(audio)
    assert sample(page, "aai_webhook_acks_total", outcome="accepted") >= 1
    assert sample(page, "aai_webhook_to_final_seconds_count") >= 1
    assert sample(page, "aai_llm_tokens_total", key_id=key_id, kind="prompt") > 0
    assert sample(page, "aai_llm_tokens_total", key_id=key_id, kind="completion") > 0
    submits = sample(
        page,
        "aai_upstream_request_duration_seconds_count",
        host="rest",
        route="/v2/transcript",
        outcome="2xx",
    )
    assert submits == 1
    uploads = sample(
        page,
        "aai_upstream_request_duration_seconds_count",
        host="rest",
        route="/v2/upload",
        outcome="2xx",
    )
    assert uploads == 1
    assert sample(page, "aai_llm_budget_used_tokens", key_id=key_id) > 0


def test_worker_serves_its_own_metrics_on_metrics_port(
    make_database: Callable[..., str], tmp_path: Path
) -> None:
    url = make_database()
    metrics_port = free_port()
    env = {
        "APP_ENV": "test",
        "DATABASE_URL": url,
        "ASSEMBLYAI_API_KEY": "a-key-never-used-123",
        "METRICS_PORT": str(metrics_port),
        "METRICS_TOKEN": "worker-scrape-secret",
        "LOG_LEVEL": "WARNING",
    }
    from app.core.migrate import upgrade

    upgrade(url, "heads")
    aai_proxy = str(Path(sys.executable).parent / "aai-proxy")
    with run_process("worker", [aai_proxy, "worker"], env, metrics_port, timeout=60):
        target = f"http://127.0.0.1:{metrics_port}"
        refused = httpx.get(f"{target}/metrics")
        assert refused.status_code == 401
        assert refused.json()["error"] == "MetricsUnauthorized"
        auth = {"Authorization": "Bearer worker-scrape-secret"}
        page = httpx.get(f"{target}/metrics", headers=auth)
        assert page.status_code == 200
        assert "aai_relay_deliveries_total" in page.text
        assert "aai_webhook_to_final_seconds" in page.text
        assert httpx.get(f"{target}/other", headers=auth).status_code == 404
