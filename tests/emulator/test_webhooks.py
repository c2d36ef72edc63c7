"""Webhook delivery on real sockets: payload and auth header, the retry schedule, 4xx not
retried, timeouts, the retry cap, and delivery before the submit answer."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.emulator.conftest import Emu, Receiver

pytestmark = pytest.mark.e2e

INTERVAL = 0.2  # FAST_KNOBS["webhook_retry_interval_s"]


def submit_with_hook(emu: Emu, receiver: Receiver, wav: bytes) -> str:
    body = emu.submit(
        audio_url=emu.upload(wav),
        webhook_url=f"{receiver.url}/hook?job=1",
        webhook_auth_header_name="X-Hook-Secret",
        webhook_auth_header_value="s3cret-value",
    )
    return str(body["id"])


def test_delivered_once_with_payload_and_header(
    emu: Emu, receiver: Receiver, speech_wav: Callable[..., bytes]
) -> None:
    tid = submit_with_hook(emu, receiver, speech_wav("hello"))

    first = receiver.wait_for(1)[0]

    assert first["path"] == "/hook?job=1"
    assert first["json"] == {"transcript_id": tid, "status": "completed"}
    assert first["headers"]["x-hook-secret"] == "s3cret-value"
    assert first["headers"]["content-type"] == "application/json"
    # The job was complete when the webhook fired.
    assert emu.http.get(f"/v2/transcript/{tid}", headers=emu.auth()).json()["status"] == "completed"
    attempts = emu.wait_attempts(tid, 1)
    assert [(a["attempt"], a["status"]) for a in attempts] == [(1, 200)]
    assert attempts[0]["header_name"] == "X-Hook-Secret"
    assert "s3cret-value" not in str(attempts)
    assert emu.wait(tid)["webhook_status_code"] == 200


def test_error_status_is_delivered_too(emu: Emu, receiver: Receiver) -> None:
    tid = submit_with_hook(emu, receiver, b"not audio at all")
    assert receiver.wait_for(1)[0]["json"] == {"transcript_id": tid, "status": "error"}


def test_5xx_is_retried_at_the_interval_until_2xx(
    emu: Emu, receiver: Receiver, speech_wav: Callable[..., bytes]
) -> None:
    receiver.statuses = [500, 503, 502, 200]
    tid = submit_with_hook(emu, receiver, speech_wav("hello"))

    received = receiver.wait_for(4)

    gaps = [b["at"] - a["at"] for a, b in zip(received, received[1:], strict=False)]
    assert all(INTERVAL * 0.9 <= gap < INTERVAL + 1.0 for gap in gaps), gaps
    assert all(r["json"]["transcript_id"] == tid for r in received)
    attempts = emu.wait_attempts(tid, 4)
    assert [(a["attempt"], a["status"]) for a in attempts] == [
        (1, 500),
        (2, 503),
        (3, 502),
        (4, 200),
    ]
    time.sleep(INTERVAL * 2)  # an absence: nothing more may arrive after the 2xx
    assert len(receiver.received) == 4


def test_4xx_is_not_retried(emu: Emu, receiver: Receiver, speech_wav: Callable[..., bytes]) -> None:
    receiver.statuses = [410]
    tid = submit_with_hook(emu, receiver, speech_wav("hello"))
    receiver.wait_for(1)
    emu.wait_attempts(tid, 1)
    time.sleep(INTERVAL * 3)  # an absence: a retry would have come by now
    assert len(receiver.received) == 1
    assert [(a["attempt"], a["status"]) for a in emu.attempts(tid)] == [(1, 410)]
    assert emu.wait(tid)["webhook_status_code"] == 410


def test_no_answer_in_time_is_retried(
    emu: Emu, receiver: Receiver, speech_wav: Callable[..., bytes]
) -> None:
    receiver.delay_s = [1.0]  # longer than webhook_timeout_s (0.5 s)
    tid = submit_with_hook(emu, receiver, speech_wav("hello"))
    receiver.wait_for(2)
    attempts = emu.wait_attempts(tid, 2)
    assert attempts[0]["status"] is None
    assert attempts[0]["error"] == "timeout"
    assert 400 <= attempts[0]["duration_ms"] < 900
    assert attempts[1]["status"] == 200


def test_gives_up_after_max_retries(emu: Emu, receiver: Receiver) -> None:
    emu.knobs(webhook_max_retries=3, webhook_retry_interval_s=0.05)
    receiver.default = 500
    tid = submit_with_hook(emu, receiver, b"junk")
    receiver.wait_for(4)
    emu.wait_attempts(tid, 4)
    time.sleep(0.3)  # an absence: a fifth attempt would have come by now
    assert [a["attempt"] for a in emu.attempts(tid)] == [1, 2, 3, 4]


def test_unreachable_receiver_is_retried(emu: Emu) -> None:
    emu.knobs(webhook_max_retries=2, webhook_retry_interval_s=0.05)
    tid = emu.submit(audio_url=emu.upload(b"junk"), webhook_url="http://127.0.0.1:9/hook")["id"]
    emu.wait_attempts(tid, 3)
    assert all(a["status"] is None and a["error"] for a in emu.attempts(tid))


def test_injected_webhook_failures(
    emu: Emu, receiver: Receiver, speech_wav: Callable[..., bytes]
) -> None:
    emu.fault(route="WEBHOOK", status=503, count=2)
    tid = submit_with_hook(emu, receiver, speech_wav("hello"))
    receiver.wait_for(1)  # the third attempt reaches the receiver
    attempts = emu.wait_attempts(tid, 3)
    assert [(a["attempt"], a["status"]) for a in attempts] == [(1, 503), (2, 503), (3, 200)]


def test_webhook_before_the_submit_answer(
    emu: Emu, receiver: Receiver, speech_wav: Callable[..., bytes]
) -> None:
    emu.knobs(webhook_before_response=True)
    url = emu.upload(speech_wav("hello"))

    answer = emu.submit(audio_url=url, webhook_url=f"{receiver.url}/hook")

    # No waiting: the webhook already arrived when the submit answered.
    assert len(receiver.received) == 1
    assert receiver.received[0]["json"] == {"transcript_id": answer["id"], "status": "completed"}
    assert answer["status"] == "queued"
