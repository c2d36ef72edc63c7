"""Webhooks with the emulator and the real submit path: a webhook that beats the submit
answer, and no webhook at all (no PUBLIC_BASE_URL) completing by polling."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from tests.e2e.webhooks_support import db, wait_until
from tests.live import EMULATOR_KEY, Proc, create_key_in, run_emulator, run_service
from tests.transcripts.harness import wav_bytes

pytestmark = pytest.mark.e2e

FAST = {"RECONCILER_TICK_S": "0.2", "RECONCILER_POLL_SCHEDULE_S": "0.3"}


def _submit(service: Proc, key: str) -> dict[str, str]:
    headers = {"Authorization": key}
    with httpx.Client(timeout=30) as client:
        upload = client.post(f"{service.url}/v2/upload", content=wav_bytes(0.5), headers=headers)
        assert upload.status_code == 200, upload.text
        r = client.post(
            f"{service.url}/v2/transcript",
            json={"audio_url": upload.json()["upload_url"]},
            headers=headers,
        )
        assert r.status_code == 200, r.text
        answer: dict[str, str] = r.json()
        return answer


def _job(database: str, upstream_id: str) -> dict[str, object]:
    row = db(
        database,
        lambda c: c.fetchrow(
            "SELECT status, result, webhook_received_at FROM jobs WHERE upstream_id = $1",
            upstream_id,
        ),
    )
    return dict(row) if row else {}


def _webhook_attempts(emulator: Proc, upstream_id: str) -> list[dict[str, object]]:
    r = httpx.get(
        f"{emulator.url}/_emulator/webhooks",
        params={"transcript_id": upstream_id},
        headers={"Authorization": EMULATOR_KEY},
    )
    assert r.status_code == 200, r.text
    attempts: list[dict[str, object]] = r.json()
    return attempts


def test_webhook_before_the_submit_answer_completes_the_job(
    make_database: Callable[..., str],
) -> None:
    database = make_database()
    key = create_key_in(database, ["transcripts"])
    # Polling would take 30 s here: only the early webhook can finish the job in time.
    env = {**FAST, "POLL_INITIAL_DELAY_S": "30", "RECONCILER_POLL_SCHEDULE_S": "30"}
    with (
        run_emulator({"EMULATOR_WEBHOOK_BEFORE_RESPONSE": "true"}) as emulator,
        run_service(database, emulator.url, env) as service,
    ):
        answer = _submit(service, key)
        upstream_id = answer["id"]
        attempts = _webhook_attempts(emulator, upstream_id)
        assert [a["status"] for a in attempts] == [200]  # accepted, though the job was submitting
        wait_until(
            lambda: _job(database, upstream_id).get("status") == "completed", 15, "completion"
        )
        assert _job(database, upstream_id)["webhook_received_at"] is not None


def test_without_public_base_url_polling_completes_the_job(
    make_database: Callable[..., str], emulator: Proc
) -> None:
    database = make_database()
    key = create_key_in(database, ["transcripts"])
    env = {**FAST, "PUBLIC_BASE_URL": "", "POLL_INITIAL_DELAY_S": "0.2"}
    with run_service(database, emulator.url, env) as service:
        upstream_id = _submit(service, key)["id"]
        wait_until(
            lambda: _job(database, upstream_id).get("status") == "completed", 20, "completion"
        )
        job = _job(database, upstream_id)
        assert job["webhook_received_at"] is None
        assert job["result"] is not None
    assert _webhook_attempts(emulator, upstream_id) == []
