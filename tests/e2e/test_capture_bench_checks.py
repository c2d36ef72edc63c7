"""`bench/capture_fidelity.py` refuses to measure a record that is not what the page sent:
a frame missing or resized, a frame delivered twice, PCM that is not the frames' bytes."""

from __future__ import annotations

import os
from typing import Any

import pytest

from bench.capture_fidelity import check_frames

SIZE = 3200  # 100 ms of PCM16 at 16 kHz


def frames(count: int) -> list[bytes]:
    return [os.urandom(SIZE) for _ in range(count)]


def record(pieces: list[bytes]) -> dict[str, Any]:
    return {"frames": [{"kind": "binary", "size": len(p)} for p in pieces]}


def log(pieces: list[bytes]) -> list[list[float]]:
    return [[i * 100.0, len(p)] for i, p in enumerate(pieces)]


def test_the_frames_the_page_sent_pass() -> None:
    sent = [*frames(5), bytes(SIZE), bytes(SIZE), *frames(3)]  # silence may repeat
    check_frames(record(sent), b"".join(sent), log(sent))


def test_a_frame_delivered_twice_is_refused_even_when_the_count_is_right() -> None:
    sent = frames(10)
    received = [*sent[:4], sent[3], *sent[4:9]]  # frame 3 twice, the last one lost
    with pytest.raises(RuntimeError, match="frame 4 arrived with the same bytes as frame 3"):
        check_frames(record(received), b"".join(received), log(sent))


def test_a_missing_frame_or_short_pcm_is_refused() -> None:
    sent = frames(10)
    with pytest.raises(RuntimeError, match="the page sent 10 frames"):
        check_frames(record(sent[:9]), b"".join(sent[:9]), log(sent))
    with pytest.raises(RuntimeError, match="PCM bytes"):
        check_frames(record(sent), b"".join(sent)[:-2], log(sent))
