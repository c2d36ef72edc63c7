"""The emulator's pre-recorded REST API on a real port: the official SDK end to end, and
every error path of the reference."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import assemblyai as aai
import pytest

from emulator import recognition
from emulator.transcripts import (
    MSG_CHAPTERS_AND_SUMMARY,
    MSG_SPEECH_MODEL_DEPRECATED,
    MSG_SPEECH_MODELS,
    MSG_WORD_BOOST_U3,
)
from tests.emulator.conftest import Emu, Receiver, inprocess

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore::DeprecationWarning:assemblyai.*"),
]

NUMBERS = "one two three four five"
needs_recogniser = pytest.mark.skipif(
    not recognition.whisper_available(), reason="the recognition extra is not installed"
)


@needs_recogniser
def test_sdk_transcribes_a_wav_end_to_end(
    emu: Emu, speech_wav: Callable[..., bytes], tmp_path: Path
) -> None:
    path = tmp_path / "numbers.wav"
    path.write_bytes(speech_wav(NUMBERS))
    aai.settings.api_key = emu.key
    aai.settings.base_url = emu.url
    aai.settings.polling_interval = 0.05
    config = aai.TranscriptionConfig(
        speech_models=["universal-3-pro", "universal-2"], speaker_labels=True
    )

    transcript = aai.Transcriber(config=config).transcribe(str(path))

    assert transcript.status == aai.TranscriptStatus.completed, transcript.error
    assert transcript.text is not None
    heard = {w.text.strip(".").lower() for w in transcript.words or []}
    # Synthetic speech is not always heard perfectly; most of the numbers must come through.
    assert len(heard & set(NUMBERS.split())) >= 4, transcript.text
    assert transcript.json_response["speech_model_used"] == "universal-3-pro"
    assert transcript.json_response["speech_model"] is None
    assert transcript.audio_duration == round(recognition.decode_wav(path.read_bytes()).duration_s)
    words = transcript.words or []
    assert all(w.speaker == "A" for w in words)
    assert words == sorted(words, key=lambda w: w.start)
    assert words[-1].end <= 1000 * recognition.decode_wav(path.read_bytes()).duration_s
    assert transcript.utterances
    assert transcript.utterances[0].text == transcript.text
    # The upload the SDK made is the file, byte for byte.
    uploads = emu.http.get("/_emulator/uploads").json()
    assert uploads[0]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert uploads[0]["bytes"] == path.stat().st_size


def test_status_moves_queued_processing_completed(
    emu: Emu, speech_wav: Callable[..., bytes]
) -> None:
    emu.knobs(queued_s=0.3, min_processing_s=0.3)
    url = emu.upload(speech_wav("hello"))
    submitted = emu.submit(audio_url=url)
    assert submitted["status"] == "queued"
    assert submitted["text"] is None
    assert submitted["words"] is None
    seen = []
    while not seen or seen[-1] not in ("completed", "error"):
        body = emu.http.get(f"/v2/transcript/{submitted['id']}", headers=emu.auth()).json()
        if not seen or seen[-1] != body["status"]:
            seen.append(body["status"])
    assert seen == ["queued", "processing", "completed"]


def test_upload_is_streamed_and_recorded(emu: Emu) -> None:
    data = bytes(range(256)) * 40_000  # ~10 MB, several receive batches

    url = emu.upload(data)

    assert url.startswith(emu.url + "/upload/")
    record = emu.http.get("/_emulator/uploads").json()[0]
    assert record == {
        "key": url.rsplit("/", 1)[1],
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "sink": False,
        "created_at": record["created_at"],
    }


def test_upload_refuses_multipart(emu: Emu) -> None:
    response = emu.http.post("/v2/upload", files={"file": b"RIFF"}, headers=emu.auth())
    assert response.status_code == 400
    assert "raw binary" in response.json()["error"]


def test_upload_refuses_an_empty_body(emu: Emu) -> None:
    response = emu.http.post("/v2/upload", content=b"", headers=emu.auth())
    assert response.status_code == 400


@pytest.mark.parametrize("header", [None, "Bearer emulator-test-key", "wrong", ""])
def test_rest_refuses_a_bearer_prefix_or_bad_key(emu: Emu, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    for method, path in [
        ("POST", "/v2/upload"),
        ("POST", "/v2/transcript"),
        ("GET", "/v2/transcript"),
        ("GET", "/v2/transcript/x"),
    ]:
        response = emu.http.request(method, path, headers=headers, content=b"{}")
        assert response.status_code == 401, (method, path)
        assert response.json() == {"error": "Authentication error, API token missing/invalid"}


async def test_upload_size_limit(tmp_path: Path) -> None:
    async with inprocess(tmp_path, max_upload_bytes=1000) as client:
        auth = {"Authorization": "emulator-test-key"}
        announced = await client.post("/v2/upload", content=b"x" * 1001, headers=auth)
        assert announced.status_code == 413

        async def chunks():  # no Content-Length: the limit is enforced while streaming
            for _ in range(3):
                yield b"x" * 400

        streamed = await client.post("/v2/upload", content=chunks(), headers=auth)
        assert streamed.status_code == 413
        assert list((tmp_path / "uploads").iterdir()) == []
        ok = await client.post("/v2/upload", content=b"x" * 1000, headers=auth)
        assert ok.status_code == 200


async def test_sink_mode_counts_and_hashes_only(
    tmp_path: Path, speech_wav: Callable[..., bytes]
) -> None:
    wav = speech_wav("hello world")
    async with inprocess(tmp_path, upload_sink=True, min_processing_s=0, queued_s=0) as client:
        auth = {"Authorization": "emulator-test-key"}
        url = (await client.post("/v2/upload", content=wav, headers=auth)).json()["upload_url"]
        records = (await client.get("/_emulator/uploads")).json()
        assert records[0]["sink"] is True
        assert records[0]["sha256"] == hashlib.sha256(wav).hexdigest()
        assert not (tmp_path / "uploads").exists()
        body = {"audio_url": url, "speech_models": ["universal-2"]}
        tid = (await client.post("/v2/transcript", json=body, headers=auth)).json()["id"]
        for _ in range(500):
            got = (await client.get(f"/v2/transcript/{tid}", headers=auth)).json()
            if got["status"] == "completed":
                break
            await asyncio.sleep(0.01)
        # No audio was kept: placeholder words over the duration the WAV header announces.
        assert got["status"] == "completed"
        assert got["audio_duration"] == round(recognition.decode_wav(wav).duration_s)
        assert got["words"][0]["text"] == "Alpha"


def test_upload_url_is_usable_only_by_the_same_key(
    emu: Emu, speech_wav: Callable[..., bytes]
) -> None:
    url = emu.upload(speech_wav("hello"))
    stolen = emu.submit(key=emu.other_key, audio_url=url)
    done = emu.http.get(f"/v2/transcript/{stolen['id']}", headers=emu.auth(emu.other_key))
    while done.json()["status"] not in ("completed", "error"):
        done = emu.http.get(f"/v2/transcript/{stolen['id']}", headers=emu.auth(emu.other_key))
    assert done.json()["status"] == "error"
    assert done.json()["error"].startswith("Download error, unable to download")
    assert emu.wait(emu.submit(audio_url=url)["id"])["status"] == "completed"


def test_unreadable_audio_ends_in_error(emu: Emu) -> None:
    url = emu.upload(b"this is plain text, not audio")
    result = emu.wait(emu.submit(audio_url=url)["id"])
    assert result["status"] == "error"
    assert result["error"].startswith("Transcoding failed. File does not appear to contain audio.")
    assert result["text"] is None


def test_audio_url_fetched_over_http(
    emu: Emu, receiver: Receiver, speech_wav: Callable[..., bytes]
) -> None:
    receiver.files["/a.wav"] = speech_wav("hello world")
    ok = emu.wait(emu.submit(audio_url=f"{receiver.url}/a.wav")["id"])
    assert ok["status"] == "completed"
    assert ok["audio_duration"] == round(
        recognition.decode_wav(receiver.files["/a.wav"]).duration_s
    )
    missing = emu.wait(emu.submit(audio_url=f"{receiver.url}/missing.wav")["id"])
    assert missing["status"] == "error"
    assert missing["error"].startswith(f"Download error, unable to download {receiver.url}")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"speech_models": ["universal-2"]}, '"audio_url" is required and must be a URL'),
        ({"audio_url": "http://a/b.wav"}, MSG_SPEECH_MODELS),
        ({"audio_url": "http://a/b.wav", "speech_models": []}, MSG_SPEECH_MODELS),
        ({"audio_url": "http://a/b.wav", "speech_models": ["best"]}, MSG_SPEECH_MODELS),
        ({"audio_url": "http://a/b.wav", "speech_models": "universal-2"}, MSG_SPEECH_MODELS),
        (
            {
                "audio_url": "http://a/b.wav",
                "speech_model": "best",
                "speech_models": ["universal-2"],
            },
            MSG_SPEECH_MODEL_DEPRECATED,
        ),
        (
            {
                "audio_url": "http://a/b.wav",
                "speech_models": ["universal-2"],
                "auto_chapters": True,
                "summarization": True,
            },
            MSG_CHAPTERS_AND_SUMMARY,
        ),
        (
            {
                "audio_url": "http://a/b.wav",
                "speech_models": ["universal-3-pro"],
                "word_boost": ["x"],
            },
            MSG_WORD_BOOST_U3,
        ),
        (
            {
                "audio_url": "http://a/b.wav",
                "speech_models": ["universal-2"],
                "keyterms_prompt": ["k"] * 201,
            },
            '"keyterms_prompt" accepts at most 200 terms with universal-2',
        ),
        (
            {
                "audio_url": "http://a/b.wav",
                "speech_models": ["universal-3-pro"],
                "keyterms_prompt": ["k"] * 1001,
            },
            '"keyterms_prompt" accepts at most 1000 terms with universal-3-pro',
        ),
        (
            {
                "audio_url": "http://a/b.wav",
                "speech_models": ["universal-2"],
                "keyterms_prompt": "k",
            },
            '"keyterms_prompt" must be a list of strings',
        ),
        (
            {
                "audio_url": "http://a/b.wav",
                "speech_models": ["universal-2"],
                "webhook_url": "http://h/w",
                "webhook_auth_header_name": "X-Secret",
            },
            '"webhook_auth_header_name" and "webhook_auth_header_value" must be provided together',
        ),
        (
            {
                "audio_url": "http://a/b.wav",
                "speech_models": ["universal-2"],
                "webhook_url": "ftp://x",
            },
            '"webhook_url" must be a valid http(s) URL',
        ),
        (
            {"audio_url": "http://a/b.wav", "speech_models": ["universal-2"], "domain": "legal"},
            '"domain" must be one of: medical-v1',
        ),
        (
            {
                "audio_url": "http://a/b.wav",
                "speech_models": ["universal-2"],
                "speaker_labels": "yes",
            },
            '"speaker_labels" must be a boolean',
        ),
        (
            {"audio_url": "http://a/b.wav", "speech_models": ["universal-2"], "redact_pii": True},
            '"redact_pii_policies" is required when "redact_pii" is enabled',
        ),
    ],
)
def test_submit_validation(emu: Emu, body: dict[str, object], message: str) -> None:
    response = emu.http.post("/v2/transcript", json=body, headers=emu.auth())
    assert response.status_code == 400
    assert response.json() == {"error": message}
    assert emu.http.get("/_emulator/transcripts").json() == []


def test_submit_refuses_bad_json(emu: Emu) -> None:
    response = emu.http.post("/v2/transcript", content=b"{nope", headers=emu.auth())
    assert response.status_code == 400
    response = emu.http.post("/v2/transcript", json=[1], headers=emu.auth())
    assert response.status_code == 400


def test_submit_echoes_parameters_and_never_the_webhook_secret(emu: Emu) -> None:
    body = emu.submit(
        audio_url="http://a/b.wav",
        speech_models=["universal-2"],
        keyterms_prompt=["AssemblyAI"],
        webhook_url="http://127.0.0.1:9/hook",
        webhook_auth_header_name="X-Hook",
        webhook_auth_header_value="very-secret-value",
    )
    assert body["speech_models"] == ["universal-2"]
    assert body["keyterms_prompt"] == ["AssemblyAI"]
    assert body["webhook_auth"] is True
    assert body["webhook_auth_header_name"] == "X-Hook"
    assert "very-secret-value" not in str(body)
    listed = emu.http.get("/_emulator/transcripts").text
    assert "very-secret-value" not in listed


def test_unknown_and_foreign_transcripts_are_404(
    emu: Emu, speech_wav: Callable[..., bytes]
) -> None:
    tid = emu.submit(audio_url=emu.upload(speech_wav("hello")))["id"]
    emu.wait(tid)
    for path in ["", "/sentences", "/paragraphs", "/srt", "/vtt", "/word-search?words=a"]:
        unknown = emu.http.get(f"/v2/transcript/nope{path}", headers=emu.auth())
        assert unknown.status_code == 404
        foreign = emu.http.get(f"/v2/transcript/{tid}{path}", headers=emu.auth(emu.other_key))
        assert foreign.status_code == 404
        assert foreign.json() == {"error": "Transcript not found"}
    assert (
        emu.http.delete(f"/v2/transcript/{tid}", headers=emu.auth(emu.other_key)).status_code == 404
    )


def test_sub_resources(emu: Emu, speech_wav: Callable[..., bytes]) -> None:
    emu.knobs()
    # Two phrases with a long pause: two sentences.
    wav = speech_wav("one two three. [[_::_::_::_::_::_::_::_::_::_::_::]] four five six")
    done = emu.wait(emu.submit(audio_url=emu.upload(wav), speaker_labels=True)["id"])
    assert done["status"] == "completed"
    tid, words = done["id"], done["words"]
    assert words, done

    sentences = emu.http.get(f"/v2/transcript/{tid}/sentences", headers=emu.auth()).json()
    joined = [w for s in sentences["sentences"] for w in s["words"]]
    assert joined == words
    assert all(s["text"].endswith(".") for s in sentences["sentences"])
    assert sentences["audio_duration"] == done["audio_duration"]

    paragraphs = emu.http.get(f"/v2/transcript/{tid}/paragraphs", headers=emu.auth()).json()
    assert [w for p in paragraphs["paragraphs"] for w in p["words"]] == words

    srt = emu.http.get(f"/v2/transcript/{tid}/srt?chars_per_caption=8", headers=emu.auth())
    assert srt.status_code == 200
    blocks = srt.text.strip().split("\n\n")
    assert blocks[0].startswith("1\n00:00:")
    assert " --> " in blocks[0]
    captions = [b.split("\n", 2)[2] for b in blocks]
    assert " ".join(captions) == done["text"]
    assert all(len(c) <= 8 or " " not in c for c in captions)

    vtt = emu.http.get(f"/v2/transcript/{tid}/vtt", headers=emu.auth())
    assert vtt.text.startswith("WEBVTT\n\n")
    assert vtt.headers["content-type"].startswith("text/vtt")

    first = words[0]["text"].strip(".").lower()
    search = emu.http.get(
        f"/v2/transcript/{tid}/word-search", params={"words": f"{first},zzz"}, headers=emu.auth()
    ).json()
    assert search["matches"][0]["text"] == first
    assert search["matches"][0]["indexes"][0] == 0
    assert search["matches"][0]["timestamps"][0] == [words[0]["start"], words[0]["end"]]
    assert search["total_count"] == sum(m["count"] for m in search["matches"])
    missing = emu.http.get(f"/v2/transcript/{tid}/word-search", headers=emu.auth())
    assert missing.status_code == 400
    bad = emu.http.get(f"/v2/transcript/{tid}/srt?chars_per_caption=x", headers=emu.auth())
    assert bad.status_code == 400


def test_sub_resources_need_a_completed_transcript(emu: Emu) -> None:
    emu.knobs(queued_s=5)
    tid = emu.submit(audio_url="http://127.0.0.1:9/x.wav")["id"]
    response = emu.http.get(f"/v2/transcript/{tid}/srt", headers=emu.auth())
    assert response.status_code == 400
    assert "'queued'" in response.json()["error"]
    deleting = emu.http.delete(f"/v2/transcript/{tid}", headers=emu.auth())
    assert deleting.status_code == 400


def test_delete(emu: Emu, speech_wav: Callable[..., bytes]) -> None:
    tid = emu.submit(audio_url=emu.upload(speech_wav("hello")))["id"]
    emu.wait(tid)
    deleted = emu.http.delete(f"/v2/transcript/{tid}", headers=emu.auth())
    assert deleted.status_code == 200
    assert deleted.json()["text"] == "Deleted by user."
    assert deleted.json()["words"] is None
    assert deleted.json()["audio_url"] == "http://deleted_by_user"
    again = emu.http.get(f"/v2/transcript/{tid}", headers=emu.auth()).json()
    assert again["text"] == "Deleted by user."


def test_list_pages(emu: Emu) -> None:
    emu.knobs(queued_s=5)  # all stay queued: ordering only
    ids = [emu.submit(audio_url=f"http://127.0.0.1:9/{n}.wav")["id"] for n in range(5)]
    emu.submit(key=emu.other_key, audio_url="http://127.0.0.1:9/other.wav")

    first = emu.http.get("/v2/transcript", params={"limit": 2}, headers=emu.auth()).json()
    assert [t["id"] for t in first["transcripts"]] == [ids[4], ids[3]]
    assert first["page_details"]["result_count"] == 2
    assert first["page_details"]["next_url"] is None  # nothing newer
    item = first["transcripts"][0]
    assert set(item) == {
        "id",
        "resource_url",
        "status",
        "created",
        "completed",
        "audio_url",
        "error",
    }
    assert item["resource_url"].endswith(f"/v2/transcript/{ids[4]}")

    older = emu.http.get(first["page_details"]["prev_url"], headers=emu.auth()).json()
    assert [t["id"] for t in older["transcripts"]] == [ids[2], ids[1]]
    newer = emu.http.get(older["page_details"]["next_url"], headers=emu.auth()).json()
    assert [t["id"] for t in newer["transcripts"]] == [ids[4], ids[3]]
    window = emu.http.get(
        "/v2/transcript", params={"after_id": ids[0], "before_id": ids[3]}, headers=emu.auth()
    ).json()
    assert [t["id"] for t in window["transcripts"]] == [ids[2], ids[1]]

    reversed_window = emu.http.get(
        "/v2/transcript", params={"after_id": ids[3], "before_id": ids[0]}, headers=emu.auth()
    )
    assert reversed_window.status_code == 400
    assert reversed_window.json() == {
        "error": "'after_id' must be a newer transcript than 'before_id'"
    }
    for params in [
        {"limit": 0},
        {"limit": 201},
        {"limit": "x"},
        {"status": "done"},
        {"before_id": "x"},
    ]:
        assert emu.http.get("/v2/transcript", params=params, headers=emu.auth()).status_code == 400
    queued = emu.http.get(
        "/v2/transcript", params={"status": "queued", "limit": 200}, headers=emu.auth()
    )
    assert len(queued.json()["transcripts"]) == 5  # the other key's is not listed


@pytest.mark.skipif(shutil.which("sox") is None, reason="sox is not installed")
def test_non_wav_containers_are_decoded_through_sox(
    emu: Emu, speech_wav: Callable[..., bytes], tmp_path: Path
) -> None:
    source = tmp_path / "speech.wav"
    source.write_bytes(speech_wav("hello world"))
    flac = tmp_path / "speech.flac"
    subprocess.run(["sox", str(source), str(flac)], check=True)
    done = emu.wait(emu.submit(audio_url=emu.upload(flac.read_bytes()))["id"])
    assert done["status"] == "completed"
    assert done["audio_duration"] == round(recognition.decode_wav(source.read_bytes()).duration_s)
    assert done["words"]
