"""The reconciler across real service processes on one Postgres.

Two instances share a database; AssemblyAI is a counting stand-in (exact GETs per
transcript) that also plays the caller's webhook receiver.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.e2e.webhooks_support import (
    StandIn,
    db,
    insert_jobs,
    job_rows,
    key_id_of,
    post_webhook,
    run_stand_in,
    transcript,
    wait_until,
)
from tests.live import OUTPUT, Proc, create_key_in, run_service, service_env
from tests.webhooks.verifier import verify

pytestmark = pytest.mark.e2e

SECRET = "per-job-secret"
FAST = {
    "RECONCILER_TICK_S": "0.2",
    "RECONCILER_POLL_SCHEDULE_S": "0.3",
    "RECONCILER_ERROR_BACKOFF_S": "0.3",
    "RECONCILER_LEASE_S": "5",
    "RELAY_RETRY_SCHEDULE_S": "0.3,0.3,0.3,0.3",
    "RELAY_ALLOW_PRIVATE_NETWORKS": "true",
    "SSE_FINAL_GRACE_S": "0.5",
    "SSE_HEARTBEAT_S": "1",
    "UPSTREAM_RETRY_WAIT_INITIAL_S": "0.05",
    "UPSTREAM_RETRY_WAIT_MAX_S": "0.1",
}


@pytest.fixture(scope="module")
def stand_in() -> Iterator[StandIn]:
    with run_stand_in() as s:
        yield s


@pytest.fixture(scope="module")
def shared_db(make_database: Callable[..., str]) -> str:
    return make_database()


@pytest.fixture(scope="module")
def two_services(shared_db: str, stand_in: StandIn) -> Iterator[tuple[Proc, Proc]]:
    with (
        run_service(shared_db, stand_in.url, FAST) as a,
        run_service(shared_db, stand_in.url, FAST) as b,
    ):
        yield a, b


@pytest.fixture(scope="module")
def owner(shared_db: str) -> tuple[str, uuid.UUID]:
    raw = create_key_in(shared_db, ["transcripts"], name="owner")
    return raw, key_id_of(shared_db, raw)


def _tids(prefix: str, n: int) -> list[str]:
    return [f"{prefix}-{uuid.uuid4().hex[:10]}" for _ in range(n)]


def test_two_instances_fetch_each_job_once_and_relay_once(
    two_services: tuple[Proc, Proc], stand_in: StandIn, shared_db: str, owner: Any
) -> None:
    a, b = two_services
    tids = _tids("many", 200)
    for tid in tids:
        stand_in.transcripts[tid] = transcript(tid)
    ids = insert_jobs(
        shared_db, owner[1], tids, secret=SECRET, caller_webhook_url=f"{stand_in.url}/hook/many"
    )
    # Every completion is delivered to both instances (as upstream's retries might).
    with httpx.Client(timeout=10) as client, ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(
                lambda args: post_webhook(client, *args).status_code,
                [
                    (svc.url, job_id, tid, SECRET)
                    for job_id, tid in zip(ids, tids, strict=True)
                    for svc in (a, b)
                ],
            )
        )
    assert answers == [200] * 400

    def all_done() -> bool:
        rows = job_rows(shared_db, ids)
        return all(r["status"] == "completed" for r in rows.values()) and len(
            stand_in.hits("many")
        ) >= len(ids)

    wait_until(all_done, 60, "200 jobs completed and relayed")
    time.sleep(1.0)  # room for a wrongful second fetch or relay to show up
    assert {tid: stand_in.gets[tid] for tid in tids} == dict.fromkeys(tids, 1)
    hits = stand_in.hits("many")
    relayed = [json.loads(h.body)["data"]["id"] for h in hits]
    assert sorted(relayed) == sorted(str(i) for i in ids)
    assert len({h.headers["webhook-id"] for h in hits}) == 200
    rows = job_rows(shared_db, ids)
    assert all(r["result"] is not None and r["lease_owner"] is None for r in rows.values())


def test_polling_completes_a_job_that_gets_no_webhook(
    two_services: tuple[Proc, Proc], stand_in: StandIn, shared_db: str, owner: Any
) -> None:
    (tid,) = _tids("poll", 1)
    stand_in.transcripts[tid] = transcript(tid, "processing")
    (job_id,) = insert_jobs(shared_db, owner[1], [tid], secret=SECRET, due=True)
    wait_until(lambda: stand_in.gets[tid] >= 2, 20, "two polls")
    assert job_rows(shared_db, [job_id])[job_id]["status"] == "processing"
    stand_in.transcripts[tid] = transcript(tid, "completed")
    wait_until(
        lambda: job_rows(shared_db, [job_id])[job_id]["status"] == "completed", 20, "completion"
    )
    row = job_rows(shared_db, [job_id])[job_id]
    assert json.loads(row["result"])["text"] == f"text of {tid}"
    assert row["next_check_at"] is None
    polls = stand_in.gets[tid]
    time.sleep(1.0)
    assert stand_in.gets[tid] == polls  # a final job is not polled again


def test_upstream_error_state_is_final_with_its_message(
    two_services: tuple[Proc, Proc], stand_in: StandIn, shared_db: str, owner: Any
) -> None:
    (tid,) = _tids("err", 1)
    stand_in.transcripts[tid] = transcript(tid, "error")
    (job_id,) = insert_jobs(shared_db, owner[1], [tid], secret=SECRET, due=True)
    wait_until(lambda: job_rows(shared_db, [job_id])[job_id]["status"] == "error", 20, "error")
    assert job_rows(shared_db, [job_id])[job_id]["error"] == "Audio file could not be decoded."


def test_relay_retries_then_delivers_once_with_one_webhook_id(
    two_services: tuple[Proc, Proc], stand_in: StandIn, shared_db: str
) -> None:
    a, _ = two_services
    admin = create_key_in(shared_db, ["admin"], name="admin")
    created = httpx.post(
        f"{a.url}/api/keys",
        json={"name": "relay caller", "scopes": ["transcripts"]},
        headers={"Authorization": admin},
    ).json()
    signing_secret = created["webhook_signing_secret"]
    (tid,) = _tids("flaky", 1)
    # Upstream echoes the webhook fields we submitted: our receiver, not the caller's.
    stand_in.transcripts[tid] = transcript(
        tid,
        webhook_url=f"{a.url}/webhooks/assemblyai/ours",
        webhook_auth_header_name="X-AAI-Proxy-Webhook-Secret",
        webhook_auth=True,
    )
    stand_in.relay_script["flaky"] = [500, 503, 500]
    relayed_before = _relay_counts(two_services)
    (job_id,) = insert_jobs(
        shared_db,
        uuid.UUID(created["id"]),
        [tid],
        secret=SECRET,
        due=True,
        caller_webhook_url=f"{stand_in.url}/hook/flaky",
        caller_auth=("X-Caller-Token", "caller-secret"),
    )
    wait_until(lambda: any(h.answered == 200 for h in stand_in.hits("flaky")), 30, "delivery")
    time.sleep(1.0)
    hits = stand_in.hits("flaky")
    assert [h.answered for h in hits] == [500, 503, 500, 200]
    assert len({h.headers["webhook-id"] for h in hits}) == 1
    for hit in hits:
        verify(signing_secret, hit.headers, hit.body)
        assert hit.headers["x-caller-token"] == "caller-secret"
    body = json.loads(hits[-1].body)
    assert body["type"] == "transcript.completed"
    assert body["data"]["id"] == str(job_id)
    assert body["data"]["transcript"]["text"] == f"text of {tid}"
    # The caller sees its own webhook in the transcript, never our receiver's URL or header.
    assert body["data"]["transcript"]["webhook_url"] == f"{stand_in.url}/hook/flaky"
    assert body["data"]["transcript"]["webhook_auth_header_name"] == "X-Caller-Token"
    assert "/webhooks/assemblyai/" not in hits[-1].body.decode()
    assert body["data"]["transcript_url"] == f"/v2/transcript/{tid}"  # our job view
    attempts = db(
        shared_db,
        lambda c: c.fetch(
            "SELECT a.attempt_no, a.response_code FROM relay_attempts a "
            "JOIN relay_deliveries d ON d.id = a.delivery_id WHERE d.job_id = $1 "
            "ORDER BY a.attempt_no",
            job_id,
        ),
    )
    assert [(r["attempt_no"], r["response_code"]) for r in attempts] == [
        (1, 500),
        (2, 503),
        (3, 500),
        (4, 200),
    ]
    after = _relay_counts(two_services)  # /metrics of both instances, added up
    assert {k: after[k] - relayed_before.get(k, 0) for k in after} == {
        "pending": 3,
        "delivered": 1,
    } | {k: 0 for k in after if k not in ("pending", "delivered")}


def _relay_counts(services: tuple[Proc, Proc]) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    counts: dict[str, float] = {}
    for service in services:
        for family in text_string_to_metric_families(httpx.get(f"{service.url}/metrics").text):
            for s in family.samples:
                if s.name == "aai_relay_deliveries_total":
                    counts[s.labels["status"]] = counts.get(s.labels["status"], 0) + s.value
    return counts


def test_410_disables_the_endpoint(
    two_services: tuple[Proc, Proc], stand_in: StandIn, shared_db: str, owner: Any
) -> None:
    first, second = _tids("gone", 2)
    stand_in.transcripts[first] = transcript(first)
    stand_in.relay_script["gone"] = [410]
    url = f"{stand_in.url}/hook/gone"
    insert_jobs(shared_db, owner[1], [first], secret=SECRET, due=True, caller_webhook_url=url)
    wait_until(lambda: stand_in.hits("gone"), 20, "the 410")
    stand_in.transcripts[second] = transcript(second)
    (job2,) = insert_jobs(
        shared_db, owner[1], [second], secret=SECRET, due=True, caller_webhook_url=url
    )
    wait_until(lambda: job_rows(shared_db, [job2])[job2]["status"] == "completed", 20, "second job")
    time.sleep(1.0)
    assert len(stand_in.hits("gone")) == 1
    disabled = db(
        shared_db,
        lambda c: c.fetchval("SELECT disabled_at FROM relay_endpoints WHERE url = $1", url),
    )
    assert disabled is not None


def _read_events(
    url: str, headers: dict[str, str], out: list[dict[str, str]], stop: threading.Event
) -> None:
    event: dict[str, str] = {}
    with (
        httpx.Client(timeout=httpx.Timeout(30, read=30)) as client,
        client.stream("GET", url, headers=headers) as response,
    ):
        out.append({"status_code": str(response.status_code)})
        for line in response.iter_lines():
            if stop.is_set():
                return
            if not line:
                if event:
                    out.append(event)
                    event = {}
                continue
            field, _, value = line.partition(":")
            if field:  # comment lines (heartbeats) have an empty field
                event[field] = value.lstrip()


def test_sse_on_one_instance_sees_a_completion_received_by_the_other(
    two_services: tuple[Proc, Proc], stand_in: StandIn, shared_db: str, owner: Any
) -> None:
    a, b = two_services
    raw, key_id = owner
    (tid,) = _tids("sse", 1)
    stand_in.transcripts[tid] = transcript(tid)
    (job_id,) = insert_jobs(shared_db, key_id, [tid], secret=SECRET)
    events: list[dict[str, str]] = []
    stop = threading.Event()
    url = f"{b.url}/api/transcripts/{job_id}/events"
    reader = threading.Thread(
        target=_read_events, args=(url, {"Authorization": raw}, events, stop), daemon=True
    )
    reader.start()
    wait_until(lambda: len(events) >= 2, 10, "the snapshot event")
    assert events[0] == {"status_code": "200"}
    assert events[1]["event"] == "queued"
    with httpx.Client() as client:
        assert post_webhook(client, a.url, job_id, tid, SECRET).status_code == 200
    wait_until(lambda: any(e.get("event") == "completed" for e in events), 15, "completed on B")
    completed = next(e for e in events if e.get("event") == "completed")
    assert json.loads(completed["data"])["status"] == "completed"
    assert int(completed["id"]) > int(events[1]["id"])
    reader.join(10)  # the stream ends once the job is final and quiet
    stop.set()
    assert not reader.is_alive()

    # Resume: with the snapshot's id as Last-Event-ID, the completion is replayed.
    replay: list[dict[str, str]] = []
    _read_events(
        url, {"Authorization": raw, "Last-Event-ID": events[1]["id"]}, replay, threading.Event()
    )
    assert [e.get("event") for e in replay[1:]] == ["completed"]

    # A browser's EventSource sends the app session cookie instead of a key.
    with httpx.Client(base_url=b.url) as browser:
        signed_in = browser.post("/api/session", json={"key": raw})
        assert signed_in.status_code == 201, signed_in.text
        with browser.stream("GET", f"/api/transcripts/{job_id}/events") as response:
            assert response.status_code == 200
            first = next(line for line in response.iter_lines() if line.startswith("event:"))
            assert first == "event: completed"
        other_user = browser.post("/api/session", json={"key": raw, "end_user": "someone"})
        assert other_user.status_code == 201
        assert browser.get(f"/api/transcripts/{job_id}/events").status_code == 404

    # Another key's job is not found.
    other = create_key_in(shared_db, ["transcripts"], name="other")
    r = httpx.get(url, headers={"Authorization": other})
    assert r.status_code == 404


def test_kill_9_mid_claim_another_instance_finishes_after_the_lease(
    make_database: Callable[..., str], stand_in: StandIn
) -> None:
    database = make_database()
    raw = create_key_in(database, ["transcripts"])
    (tid,) = _tids("crash", 1)
    stand_in.transcripts[tid] = transcript(tid)
    stand_in.get_delay_s = 30  # the first instance hangs in the fetch
    env = {**FAST, "RECONCILER_LEASE_S": "3"}
    try:
        with run_service(database, stand_in.url, env) as first:
            (job_id,) = insert_jobs(
                database, key_id_of(database, raw), [tid], secret=SECRET, due=True
            )
            wait_until(lambda: stand_in.gets[tid] >= 1, 15, "the first instance's fetch")
            claimed = job_rows(database, [job_id])[job_id]
            assert claimed["lease_owner"] is not None
            first.kill()
        stand_in.get_delay_s = 0
        with run_service(database, stand_in.url, env):
            wait_until(
                lambda: job_rows(database, [job_id])[job_id]["status"] == "completed",
                20,
                "the second instance to finish",
            )
    finally:
        stand_in.get_delay_s = 0
    row = job_rows(database, [job_id])[job_id]
    assert row["completed_at"] >= claimed["lease_expires_at"]
    assert row["lease_owner"] is None
    assert stand_in.gets[tid] == 2


def test_worker_command_runs_the_reconciler_alone(
    make_database: Callable[..., str], stand_in: StandIn
) -> None:
    database = make_database()
    raw = create_key_in(database, ["transcripts"])
    slow_tid, tid = _tids("worker", 2)
    stand_in.transcripts[tid] = transcript(tid)
    stand_in.transcripts[slow_tid] = transcript(slow_tid)
    stand_in.slow[slow_tid] = 20.0  # a hanging upstream call must not hold up the others
    key_id = key_id_of(database, raw)
    (slow_id,) = insert_jobs(database, key_id, [slow_tid], secret=SECRET, due=True)
    env = {
        **os.environ,
        **service_env(database, stand_in.url, 1),
        **FAST,
        "PUBLIC_BASE_URL": "",
    }
    OUTPUT.mkdir(exist_ok=True)
    log = (OUTPUT / f"worker-{uuid.uuid4().hex[:8]}.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-c", "from app.cli import main; main()", "worker"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(lambda: stand_in.gets[slow_tid] == 1, 15, "the slow fetch to start")
        # Due while the slow fetch hangs: picked up at once, not after it.
        (job_id,) = insert_jobs(database, key_id, [tid], secret=SECRET, due=True)
        wait_until(
            lambda: job_rows(database, [job_id])[job_id]["status"] == "completed", 10, "worker"
        )
        assert stand_in.gets[slow_tid] == 1  # still hanging in its fetch
        assert job_rows(database, [slow_id])[slow_id]["status"] == "queued"
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def test_relay_to_a_metadata_address_is_refused_without_a_request(
    two_services: tuple[Proc, Proc], stand_in: StandIn, shared_db: str, owner: Any
) -> None:
    (tid,) = _tids("ssrf", 1)
    stand_in.transcripts[tid] = transcript(tid)
    (job_id,) = insert_jobs(
        shared_db,
        owner[1],
        [tid],
        secret=SECRET,
        due=True,
        caller_webhook_url="http://169.254.169.254/latest/meta-data/",
    )

    def delivery() -> Any:
        return db(
            shared_db,
            lambda c: c.fetchrow(
                "SELECT d.status, a.error, a.response_code FROM relay_deliveries d "
                "JOIN relay_attempts a ON a.delivery_id = d.id WHERE d.job_id = $1",
                job_id,
            ),
        )

    row = wait_until(delivery, 20, "the refused delivery")
    assert row["status"] == "failed"
    assert row["response_code"] is None
    assert "link-local" in row["error"]


def test_live_status_sends_heartbeats(
    two_services: tuple[Proc, Proc], stand_in: StandIn, shared_db: str, owner: Any
) -> None:
    _, b = two_services
    raw, key_id = owner
    (tid,) = _tids("beat", 1)
    (job_id,) = insert_jobs(shared_db, key_id, [tid], secret=SECRET)
    url = f"{b.url}/api/transcripts/{job_id}/events"
    deadline = time.monotonic() + 10
    with (
        httpx.Client(timeout=10) as client,
        client.stream("GET", url, headers={"Authorization": raw}) as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith(":"):
                return  # a comment line: the heartbeat (SSE_HEARTBEAT_S=1)
            assert time.monotonic() < deadline, "no heartbeat"
    raise AssertionError("the stream ended without a heartbeat")


def test_live_status_survives_a_lost_listen_connection(
    two_services: tuple[Proc, Proc], stand_in: StandIn, shared_db: str, owner: Any
) -> None:
    a, b = two_services
    raw, key_id = owner
    (tid,) = _tids("relisten", 1)
    stand_in.transcripts[tid] = transcript(tid)
    (job_id,) = insert_jobs(shared_db, key_id, [tid], secret=SECRET)
    events: list[dict[str, str]] = []
    url = f"{b.url}/api/transcripts/{job_id}/events"
    reader = threading.Thread(
        target=_read_events,
        args=(url, {"Authorization": raw}, events, threading.Event()),
        daemon=True,
    )
    reader.start()
    wait_until(lambda: len(events) >= 2, 10, "the snapshot event")

    def listeners() -> list[Any]:
        return db(  # type: ignore[no-any-return]
            shared_db,
            lambda c: c.fetch(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'aai-proxy-listen' "
                "AND datname = current_database()"
            ),
        )

    before = {r["pid"] for r in listeners()}
    assert len(before) == 2  # one per instance
    db(
        shared_db,
        lambda c: c.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'aai-proxy-listen' AND datname = current_database()"
        ),
    )
    wait_until(
        lambda: len({r["pid"] for r in listeners()} - before) == 2, 15, "both hubs to reconnect"
    )
    with httpx.Client() as client:
        assert post_webhook(client, a.url, job_id, tid, SECRET).status_code == 200
    wait_until(lambda: any(e.get("event") == "completed" for e in events), 15, "completed on B")
    reader.join(10)  # the stream ends by itself once the job is final and quiet
    assert not reader.is_alive()


def test_a_live_instance_keeps_its_lease_through_a_slow_fetch(
    two_services: tuple[Proc, Proc], stand_in: StandIn, shared_db: str, owner: Any
) -> None:
    (tid,) = _tids("slowget", 1)
    stand_in.transcripts[tid] = transcript(tid)
    stand_in.slow[tid] = 7.0  # longer than RECONCILER_LEASE_S=5
    (job_id,) = insert_jobs(shared_db, owner[1], [tid], secret=SECRET, due=True)
    wait_until(
        lambda: job_rows(shared_db, [job_id])[job_id]["status"] == "completed", 20, "completion"
    )
    assert stand_in.gets[tid] == 1  # nobody took the job over from a live instance
