"""Drop-in compatibility: the official AssemblyAI SDK, pointed at the service, works unchanged.

Real processes on real ports: the service under uvicorn, the emulator as AssemblyAI. The
SDK authenticates with a proxy key; it never sees the AssemblyAI key. It uploads a local
WAV (spoken by espeak-ng), submits, waits by polling GET /v2/transcript/{id} (which goes
upstream until the job is final), then reads paragraphs and SRT.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import assemblyai as aai
import httpx
import pytest

from tests.live import Proc, create_key_in

pytestmark = pytest.mark.e2e

SPOKEN = "hello world. this is a test of the transcription proxy."


@pytest.fixture
def spoken_wav(tmp_path: Path) -> Path:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    path = tmp_path / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(path), SPOKEN], check=True, capture_output=True)
    return path


@pytest.fixture
def sdk(live_service: Proc, database_url: str) -> Iterator[str]:
    """The SDK's global settings pointed at the service with a proxy key (restored after)."""
    key = create_key_in(database_url, ["transcripts"], name="sdk drop-in")
    saved = (aai.settings.base_url, aai.settings.api_key, aai.settings.polling_interval)
    aai.settings.base_url = live_service.url
    aai.settings.api_key = key
    aai.settings.polling_interval = 0.2
    try:
        yield key
    finally:
        aai.settings.base_url, aai.settings.api_key, aai.settings.polling_interval = saved


def test_official_sdk_transcribes_a_local_file_through_the_proxy(
    sdk: str, spoken_wav: Path, live_service: Proc, emulator: Proc, database_url: str
) -> None:
    transcript = aai.Transcriber().transcribe(str(spoken_wav))

    assert transcript.status == aai.TranscriptStatus.completed, transcript.error
    assert transcript.id
    assert transcript.text
    assert transcript.audio_duration
    assert transcript.audio_duration > 1
    paragraphs = transcript.get_paragraphs()
    assert paragraphs
    assert " ".join(p.text for p in paragraphs).split() == transcript.text.split()
    srt = transcript.export_subtitles_srt()
    assert srt.startswith("1\n")
    assert "-->" in srt

    # Through us: the job is ours, owned by the SDK's key, its SRT cached once complete,
    # and the policy's default speech models applied.
    with httpx.Client(base_url=live_service.url, headers={"Authorization": sdk}) as client:
        listed = client.get("/api/transcripts").json()["items"]
        cached = client.get(f"/v2/transcript/{transcript.id}/srt")
    assert cached.headers["x-cache"] == "hit"
    assert cached.text == srt
    job = next(j for j in listed if j["upstream_id"] == transcript.id)
    assert job["status"] == "completed"
    assert job["audio_duration"] == pytest.approx(transcript.audio_duration)
    upstream = httpx.get(f"{emulator.url}/_emulator/transcripts", timeout=10).json()
    sent = next(t for t in upstream if t["id"] == transcript.id)
    assert sent["speech_models"] == ["universal-3-pro", "universal-2"]

    # Another key can't see it, exactly like upstream's per-key scoping.
    other = create_key_in(database_url, ["transcripts"], name="sdk other")
    with pytest.raises(aai.types.TranscriptError, match="not found"):
        _get_with(other, transcript.id)


def test_official_sdk_gets_redacted_audio_through_the_proxy(
    sdk: str, spoken_wav: Path, tmp_path: Path
) -> None:
    """`get_redacted_audio_url()` calls GET /v2/transcript/{id}/redacted-audio through us;
    `save_redacted_audio()` fetches the URL (upstream's storage, here the emulator's)."""
    config = aai.TranscriptionConfig(
        redact_pii=True,
        redact_pii_policies=[aai.PIIRedactionPolicy.person_name],
        redact_pii_audio=True,
    )
    transcript = aai.Transcriber(config=config).transcribe(str(spoken_wav))
    assert transcript.status == aai.TranscriptStatus.completed, transcript.error

    assert transcript.get_redacted_audio_url().startswith("http")
    saved = tmp_path / "redacted.wav"
    transcript.save_redacted_audio(str(saved))
    assert saved.read_bytes() == spoken_wav.read_bytes()  # the emulator redacts nothing


def test_policy_refusals_reach_sdk_users_with_their_hint(sdk: str) -> None:
    """The SDK shows `error` as the message: the hint must be there, not a class name."""
    config = aai.TranscriptionConfig(speech_model=aai.SpeechModel.nano)
    with pytest.raises(
        aai.types.TranscriptError, match="pre-recorded submits take `speech_models`"
    ):
        aai.Transcriber(config=config).submit("https://example.com/talk.wav")


def _get_with(key: str, transcript_id: str) -> aai.Transcript:
    saved = aai.settings.api_key
    aai.settings.api_key = key
    try:
        return aai.Transcript.get_by_id(transcript_id)
    finally:
        aai.settings.api_key = saved
