"""Pre-recorded transcription: validation, the job schedule, and the transcript's shapes.

A transcript is a dict in `records.transcripts` holding exactly the public JSON upstream
serves, plus private keys starting with "_" (owner, sequence, timings) never served.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections import OrderedDict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from emulator import recognition, webhooks
from emulator.recognition import AudioDecodeError, Word
from emulator.state import EmulatorState

SPEECH_MODELS = ("universal-3-pro", "universal-2")
KEYTERMS_LIMITS = {"universal-3-pro": 1000, "universal-2": 200}
KEYTERM_MAX_WORDS = 6
DOMAINS = ("medical-v1",)
SENTENCE_GAP_MS = 500
SENTENCE_MAX_WORDS = 20
PARAGRAPH_GAP_MS = 1500
PARAGRAPH_MAX_SENTENCES = 5
SPEAKER_GAP_MS = 1000

MSG_SPEECH_MODEL_DEPRECATED = (
    'speech_model is deprecated. Use "speech_models" instead. See documentation: '
    "https://www.assemblyai.com/docs/pre-recorded-audio/select-the-speech-model"
)
MSG_SPEECH_MODELS = (
    '"speech_models" must be a non-empty list containing one or more of: '
    '"universal-3-pro", "universal-2"'
)
MSG_CHAPTERS_AND_SUMMARY = (
    "Only one of the following models can be enabled at a time: auto_chapters, summarization."
)
MSG_WORD_BOOST_U3 = (
    '"word_boost" is not compatible with universal-3-pro. Use "prompt" or "keyterms_prompt" '
    "to boost accuracy of words or phrases that are likely to appear frequently in your "
    "audio file."
)
MSG_DOWNLOAD = (
    "Download error, unable to download {url}. Please make sure the file exists and is "
    "accessible from the internet."
)
MSG_TRANSCODE = "Transcoding failed. File does not appear to contain audio. {detail}"

# Request parameters echoed back on the transcript object, with upstream's defaults.
ECHOED: dict[str, Any] = {
    "audio_url": None,
    "language_code": None,
    "language_detection": False,
    "language_confidence_threshold": None,
    "punctuate": True,
    "format_text": True,
    "disfluencies": False,
    "multichannel": None,
    "speaker_labels": False,
    "speakers_expected": None,
    "speech_models": None,
    "prompt": None,
    "keyterms_prompt": None,
    "domain": None,
    "webhook_url": None,
    "webhook_auth_header_name": None,
    "audio_start_from": None,
    "audio_end_at": None,
    "filter_profanity": False,
    "redact_pii": False,
    "redact_pii_audio": False,
    "redact_pii_policies": None,
    "redact_pii_sub": None,
    "auto_highlights": False,
    "content_safety": False,
    "iab_categories": False,
    "sentiment_analysis": False,
    "entity_detection": False,
    "auto_chapters": False,
    "summarization": False,
    "summary_model": None,
    "summary_type": None,
    "speech_threshold": None,
}
BOOL_PARAMS = [k for k, v in ECHOED.items() if isinstance(v, bool)] + ["dual_channel"]


class JobError(Exception):
    """The job ends with status "error" and this message."""


# ---------------------------------------------------------------- validation


def validate_request(body: dict[str, Any]) -> str | None:
    """Upstream's 400 message for this submit body, or None when it is acceptable."""
    audio_url = body.get("audio_url")
    if not isinstance(audio_url, str) or not audio_url.strip():
        return '"audio_url" is required and must be a URL'
    if urlsplit(audio_url).scheme not in ("http", "https"):
        return f'"audio_url" must be a valid http(s) URL: {audio_url}'
    if "speech_model" in body and body["speech_model"] is not None:
        return MSG_SPEECH_MODEL_DEPRECATED
    models = body.get("speech_models")
    if (
        not isinstance(models, list)
        or not models
        or not all(isinstance(m, str) and m in SPEECH_MODELS for m in models)
    ):
        return MSG_SPEECH_MODELS
    for name in BOOL_PARAMS:
        if name in body and body[name] is not None and not isinstance(body[name], bool):
            return f'"{name}" must be a boolean'
    if body.get("auto_chapters") and body.get("summarization"):
        return MSG_CHAPTERS_AND_SUMMARY
    if body.get("word_boost") and models[0] == "universal-3-pro":
        return MSG_WORD_BOOST_U3
    keyterms = body.get("keyterms_prompt")
    if keyterms is not None:
        if not isinstance(keyterms, list) or not all(isinstance(k, str) for k in keyterms):
            return '"keyterms_prompt" must be a list of strings'
        limit = KEYTERMS_LIMITS[models[0]]
        if len(keyterms) > limit:
            return f'"keyterms_prompt" accepts at most {limit} terms with {models[0]}'
        for term in keyterms:
            if not term.strip() or len(term.split()) > KEYTERM_MAX_WORDS:
                return f'Each "keyterms_prompt" term must have 1 to {KEYTERM_MAX_WORDS} words'
    if body.get("domain") is not None and body["domain"] not in DOMAINS:
        return f'"domain" must be one of: {", ".join(DOMAINS)}'
    speakers = body.get("speakers_expected")
    if speakers is not None and (
        not isinstance(speakers, int) or isinstance(speakers, bool) or not 1 <= speakers <= 10
    ):
        return '"speakers_expected" must be an integer between 1 and 10'
    for name in ("audio_start_from", "audio_end_at"):
        value = body.get(name)
        if value is not None and (not isinstance(value, int) or value < 0):
            return f'"{name}" must be a non-negative integer (milliseconds)'
    start, end = body.get("audio_start_from"), body.get("audio_end_at")
    if isinstance(start, int) and isinstance(end, int) and end <= start:
        return '"audio_end_at" must be greater than "audio_start_from"'
    if body.get("redact_pii") and not body.get("redact_pii_policies"):
        return '"redact_pii_policies" is required when "redact_pii" is enabled'
    webhook_url = body.get("webhook_url")
    if webhook_url is not None and (
        not isinstance(webhook_url, str) or urlsplit(webhook_url).scheme not in ("http", "https")
    ):
        return '"webhook_url" must be a valid http(s) URL'
    header_name = body.get("webhook_auth_header_name")
    header_value = body.get("webhook_auth_header_value")
    if (header_name is None) != (header_value is None):
        return (
            '"webhook_auth_header_name" and "webhook_auth_header_value" must be provided together'
        )
    if header_name is not None and (
        not isinstance(header_name, str) or not isinstance(header_value, str) or not header_name
    ):
        return '"webhook_auth_header_name" and "webhook_auth_header_value" must be strings'
    return None


def new_transcript(body: dict[str, Any], owner: str, seq: int) -> dict[str, Any]:
    transcript: dict[str, Any] = {"id": str(uuid.uuid4()), "status": "queued"}
    for name, default in ECHOED.items():
        value = body.get(name)
        transcript[name] = default if value is None else value
    if transcript["language_code"] is None and not transcript["language_detection"]:
        transcript["language_code"] = "en_us"
    transcript.update(
        {
            # speech_model (singular) is deprecated; upstream answers null and names the
            # model actually used in speech_model_used once the job is done.
            "speech_model": None,
            "speech_model_used": None,
            "language_confidence": None,
            "text": None,
            "words": None,
            "utterances": None,
            "confidence": None,
            "audio_duration": None,
            "webhook_auth": body.get("webhook_auth_header_name") is not None,
            "webhook_status_code": None,
            "chapters": None,
            "summary": None,
            "auto_highlights_result": None,
            "content_safety_labels": None,
            "iab_categories_result": None,
            "sentiment_analysis_results": None,
            "entities": None,
            "throttled": False,
            "error": None,
            "_owner": owner,
            "_seq": seq,
            "_created": datetime.now(UTC),
            "_completed": None,
            "_webhook_value": body.get("webhook_auth_header_value"),
            "_sentences": [],
            "_submitted_at": time.time(),
        }
    )
    return transcript


def public(transcript: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in transcript.items() if not k.startswith("_")}


def timestamp(value: datetime | None) -> str | None:
    return None if value is None else value.replace(tzinfo=None).isoformat()


# ---------------------------------------------------------------- the job


async def run_job(state: EmulatorState, transcript: dict[str, Any], *, inline: bool) -> None:
    """queued → processing → completed/error on the knobs' schedule, then the webhook.

    inline: the caller awaits this before answering the submit (test mode switch
    webhook_before_response); the first webhook attempt is awaited too, retries go on
    in the background.
    """
    knobs = state.knobs
    loop = asyncio.get_running_loop()
    await asyncio.sleep(knobs.queued_s)
    transcript["status"] = "processing"
    started = loop.time()
    try:
        audio = await load_audio(state, transcript)
        mode = state.settings.recognition
        if audio.pcm16 is None:  # sink mode kept no audio: placeholders over its duration
            words = placeholder_over(audio.duration_s)
        else:
            words = await recognize_cached(audio.pcm16, mode)
        target = max(knobs.min_processing_s, audio.duration_s * knobs.processing_factor)
        remaining = target - (loop.time() - started)
        if remaining > 0:
            await asyncio.sleep(remaining)
        complete(transcript, words, audio.duration_s)
    except JobError as exc:
        transcript["status"] = "error"
        transcript["error"] = str(exc)
        transcript["_completed"] = datetime.now(UTC)
    if transcript.get("webhook_url"):
        await webhooks.deliver(state, transcript, inline=inline)


_recognized: OrderedDict[tuple[str, str], list[Word]] = OrderedDict()
RECOGNITION_CACHE_SIZE = 256


async def recognize_cached(pcm16: bytes, mode: str) -> list[Word]:
    """Recognition, remembered by the audio's digest: benchmarks submit the same file many
    times, and the decoder (one, behind a lock) would otherwise serialise them all."""
    key = (hashlib.sha256(pcm16).hexdigest(), mode)
    cached = _recognized.get(key)
    if cached is not None:
        _recognized.move_to_end(key)
        return cached
    words = await asyncio.to_thread(recognition.recognize, pcm16, mode=mode)
    _recognized[key] = words
    while len(_recognized) > RECOGNITION_CACHE_SIZE:
        _recognized.popitem(last=False)
    return words


class LoadedAudio:
    def __init__(self, pcm16: bytes | None, duration_s: float) -> None:
        self.pcm16 = pcm16
        self.duration_s = duration_s


def upload_key(audio_url: str) -> tuple[str, str] | None:
    """(owner tag, key) when the URL is one of this emulator's upload URLs."""
    parts = urlsplit(audio_url).path.strip("/").split("/")
    if len(parts) == 3 and parts[0] == "upload":
        return parts[1], parts[2]
    return None


def owner_tag(owner: str) -> str:
    # upload URLs carry a per-key tag (as upstream's carry a per-project one), not the key.
    return owner[:32]


async def load_audio(state: EmulatorState, transcript: dict[str, Any]) -> LoadedAudio:
    url: str = transcript["audio_url"]
    data: bytes
    located = upload_key(url)
    record = state.records.uploads.get(located[1]) if located else None
    if located and record is not None:
        if located[0] != owner_tag(transcript["_owner"]) or record.owner != transcript["_owner"]:
            # Another key's upload: upstream cannot find it for this project.
            raise JobError(MSG_DOWNLOAD.format(url=url))
        if record.path is None:
            duration = recognition.wav_duration_from_header(record.head, record.size)
            if duration is None:
                raise JobError(MSG_TRANSCODE.format(detail="(sink mode kept only the header)"))
            return LoadedAudio(None, duration)
        data = await asyncio.to_thread(Path(record.path).read_bytes)
    elif located:
        raise JobError(MSG_DOWNLOAD.format(url=url))
    else:
        data = await fetch(state, url)
    try:
        audio = await asyncio.to_thread(recognition.decode_audio, data)
    except AudioDecodeError as exc:
        raise JobError(MSG_TRANSCODE.format(detail=f"({exc})")) from exc
    pcm = audio.pcm16
    start_ms = transcript.get("audio_start_from") or 0
    end_ms = transcript.get("audio_end_at")
    if start_ms or end_ms:
        begin = start_ms * 32
        pcm = pcm[begin : end_ms * 32 if end_ms else None]
    return LoadedAudio(pcm, len(pcm) / 2 / recognition.TARGET_RATE)


async def fetch(state: EmulatorState, url: str) -> bytes:
    assert state.http is not None
    limit = state.settings.max_upload_bytes
    try:
        async with state.http.stream("GET", url, timeout=30) as response:
            if response.status_code != 200:
                raise JobError(MSG_DOWNLOAD.format(url=url))
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > limit:
                    raise JobError(MSG_DOWNLOAD.format(url=url))
                chunks.append(chunk)
            return b"".join(chunks)
    except httpx.HTTPError as exc:
        raise JobError(MSG_DOWNLOAD.format(url=url)) from exc


def placeholder_over(duration_s: float) -> list[Word]:
    """Placeholder words covering a duration (sink mode: no audio was kept)."""
    count = int(duration_s * 1000) // recognition.PLACEHOLDER_WORD_MS
    names = recognition.PLACEHOLDER_WORDS
    step = recognition.PLACEHOLDER_WORD_MS
    return [Word(names[i % len(names)], i * step, (i + 1) * step - 20, 0.9) for i in range(count)]


# ---------------------------------------------------------------- the result's shape


def sentence_ranges(words: list[Word]) -> list[tuple[int, int]]:
    """[start, end) word index ranges: a sentence ends at a pause or after 20 words."""
    ranges: list[tuple[int, int]] = []
    begin = 0
    for i, word in enumerate(words):
        last = i == len(words) - 1
        pause = not last and words[i + 1].start_ms - word.end_ms >= SENTENCE_GAP_MS
        if last or pause or i + 1 - begin >= SENTENCE_MAX_WORDS:
            ranges.append((begin, i + 1))
            begin = i + 1
    return ranges


def complete(transcript: dict[str, Any], words: list[Word], duration_s: float) -> None:
    sentences = sentence_ranges(words)
    formatted = [w.text for w in words]
    if transcript["format_text"]:
        formatted = [
            "I" if t == "i" else "I'" + t[2:] if t.startswith("i'") else t for t in formatted
        ]
    if transcript["punctuate"] or transcript["format_text"]:
        for begin, end in sentences:
            formatted[begin] = formatted[begin][:1].upper() + formatted[begin][1:]
            formatted[end - 1] = formatted[end - 1] + "."
    speakers = (
        assign_speakers(words, sentences, transcript) if transcript["speaker_labels"] else None
    )
    word_dicts = [
        {
            "text": formatted[i],
            "start": w.start_ms,
            "end": w.end_ms,
            "confidence": w.confidence,
            "speaker": speakers[i] if speakers else None,
            "channel": None,
        }
        for i, w in enumerate(words)
    ]
    text = " ".join(formatted)
    transcript.update(
        {
            "status": "completed",
            "text": text,
            "words": word_dicts,
            "confidence": _mean([w.confidence for w in words]),
            "audio_duration": int(round(duration_s)),
            "speech_model_used": transcript["speech_models"][0],
            "_sentences": sentences,
            "_completed": datetime.now(UTC),
        }
    )
    if transcript["language_detection"]:
        transcript["language_code"] = "en"
        transcript["language_confidence"] = 0.99
    if speakers:
        transcript["utterances"] = utterances(word_dicts)
    if transcript["auto_chapters"] and word_dicts:
        first = " ".join(formatted[sentences[0][0] : sentences[0][1]])
        transcript["chapters"] = [
            {
                "summary": text,
                "headline": first,
                "gist": " ".join(formatted[:3]),
                "start": word_dicts[0]["start"],
                "end": word_dicts[-1]["end"],
            }
        ]
    if transcript["summarization"]:
        transcript["summary"] = (
            " ".join(formatted[sentences[0][0] : sentences[0][1]]) if words else ""
        )


def assign_speakers(
    words: list[Word], sentences: list[tuple[int, int]], transcript: dict[str, Any]
) -> list[str]:
    """Deterministic diarization: the speaker changes at sentence breaks of >= 1 s."""
    count = transcript.get("speakers_expected") or 2
    labels: list[str] = [""] * len(words)
    speaker = 0
    for n, (begin, end) in enumerate(sentences):
        if n and words[begin].start_ms - words[begin - 1].end_ms >= SPEAKER_GAP_MS:
            speaker = (speaker + 1) % count
        for i in range(begin, end):
            labels[i] = chr(ord("A") + speaker)
    return labels


def utterances(words: list[dict[str, Any]]) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = []
    for word in words:
        if not result or result[-1]["speaker"] != word["speaker"]:
            result.append({"speaker": word["speaker"], "words": [], "channel": None})
        result[-1]["words"].append(word)
    for utterance in result:
        group = utterance["words"]
        utterance.update(_span(group))
    return result


def _mean(values: list[float]) -> float:
    return round(sum(values) / len(values), 4) if values else 0.0


def _span(words: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "text": " ".join(w["text"] for w in words),
        "start": words[0]["start"],
        "end": words[-1]["end"],
        "confidence": _mean([w["confidence"] for w in words]),
    }


def sentences_of(transcript: dict[str, Any]) -> list[dict[str, Any]]:
    words = transcript["words"] or []
    result = []
    for begin, end in transcript["_sentences"]:
        group = words[begin:end]
        result.append(
            {
                **_span(group),
                "words": group,
                "speaker": group[0]["speaker"],
                "channel": None,
            }
        )
    return result


def paragraphs_of(transcript: dict[str, Any]) -> list[dict[str, Any]]:
    """Sentences grouped: a new paragraph after a 1.5 s pause, a speaker change or 5 sentences."""
    groups: list[list[dict[str, Any]]] = []
    previous: dict[str, Any] | None = None
    for sentence in sentences_of(transcript):
        new = (
            previous is None
            or sentence["start"] - previous["end"] >= PARAGRAPH_GAP_MS
            or sentence["speaker"] != previous["speaker"]
            or len(groups[-1]) >= PARAGRAPH_MAX_SENTENCES
        )
        if new:
            groups.append([])
        groups[-1].append(sentence)
        previous = sentence
    paragraphs = []
    for group in groups:
        words = [w for s in group for w in s["words"]]
        paragraphs.append({**_span(words), "words": words})
    return paragraphs


# ---------------------------------------------------------------- captions and search


def captions(transcript: dict[str, Any], chars_per_caption: int) -> list[tuple[int, int, str]]:
    """Words packed greedily into captions of at most `chars_per_caption` characters."""
    cues: list[tuple[int, int, str]] = []
    current: list[dict[str, Any]] = []
    for word in transcript["words"] or []:
        candidate = " ".join(w["text"] for w in [*current, word])
        if current and len(candidate) > chars_per_caption:
            cues.append(
                (current[0]["start"], current[-1]["end"], " ".join(w["text"] for w in current))
            )
            current = []
        current.append(word)
    if current:
        cues.append((current[0]["start"], current[-1]["end"], " ".join(w["text"] for w in current)))
    return cues


def _clock(ms: int, separator: str) -> str:
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}{separator}{millis:03d}"


def srt(transcript: dict[str, Any], chars_per_caption: int) -> str:
    blocks = [
        f"{n}\n{_clock(start, ',')} --> {_clock(end, ',')}\n{text}\n"
        for n, (start, end, text) in enumerate(captions(transcript, chars_per_caption), start=1)
    ]
    return "\n".join(blocks)


def vtt(transcript: dict[str, Any], chars_per_caption: int) -> str:
    blocks = [
        f"{_clock(start, '.')} --> {_clock(end, '.')}\n{text}\n"
        for start, end, text in captions(transcript, chars_per_caption)
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)


def _normalize(token: str) -> str:
    return "".join(ch for ch in token.lower() if ch.isalnum() or ch == "'")


def word_search(transcript: dict[str, Any], queries: list[str]) -> dict[str, Any]:
    words = transcript["words"] or []
    tokens = [_normalize(w["text"]) for w in words]
    matches = []
    total = 0
    for query in queries:
        needle = [_normalize(t) for t in query.split() if _normalize(t)]
        if not needle:
            continue
        found = [
            i for i in range(len(tokens) - len(needle) + 1) if tokens[i : i + len(needle)] == needle
        ]
        if not found:
            continue
        matches.append(
            {
                "text": query,
                "count": len(found),
                "timestamps": [
                    [words[i]["start"], words[i + len(needle) - 1]["end"]] for i in found
                ],
                "indexes": found,
            }
        )
        total += len(found)
    return {"id": transcript["id"], "total_count": total, "matches": matches}
