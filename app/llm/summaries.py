"""Transcript summaries: presets, chunking of long transcripts, exactly-once storage.

Exactly once: a summary is one row per (job, spec, model) — the spec is the preset with
its parameters or the hash of a custom prompt — so asking twice, from any instance,
returns the same row. A row is run only by the instance holding its lease
(app/llm/worker.py) and its result stored only while that lease holds; a stored result is
never paid for again. If an instance dies after paying for a completion but before
storing it, the lease expires and the summary runs once more: at most one repeat per crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import anyio
from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core import events
from app.core.config import LlmSettings
from app.core.db import utcnow
from app.core.errors import BadRequest, Forbidden, UpstreamClientError
from app.core.tasks import running_alongside
from app.identity.principal import Principal
from app.llm import policy, service
from app.llm.models import Summary, SummaryStatus
from app.llm.policy import BudgetExceeded
from app.llm.schemas import DEFAULT_BULLETS, SummaryRead, SummaryUsage
from app.transcripts.models import Job, TranscriptResource
from app.transcripts.schemas import AppSubmitOptions, SummaryRequest
from app.upstream.client import Upstream

logger = logging.getLogger(__name__)

SUMMARY_EVENT = "summary"
RETRY_BASE_S = 15.0
RETRY_MAX_S = 1800.0

INSTRUCTIONS: dict[str, str] = {
    "bullets": (
        "Summarise the transcript in exactly {bullets} bullet points. Answer with the bullet "
        "points only, one per line, each starting with '- '."
    ),
    "paragraph": (
        "Summarise the transcript in one paragraph of plain prose. Answer with the paragraph only."
    ),
    "action_items": (
        "List the action items agreed or assigned in the transcript, one per line, each "
        "starting with '- ' and naming the owner when the transcript does. If there are "
        "none, answer with the single word 'None'."
    ),
    "chapters": (
        "The transcript below is divided into numbered chapters. For each chapter write one "
        "line in the form '<number>. <headline> | <one-sentence summary>', in order, and "
        "nothing else."
    ),
}
PARTIAL_INSTRUCTION = (
    "You are reading part {index} of {total} of one long transcript. Write concise notes of "
    "everything that matters in this part (topics, facts, decisions, names, action items); "
    "they will be combined with the notes on the other parts."
)
NOTES_PREFACE = "Notes on consecutive parts of one transcript, in order:\n\n"


# --- Specs -------------------------------------------------------------------------------


def spec_of(request: SummaryRequest) -> tuple[str, dict[str, Any], str | None]:
    """The exactly-once key of a request: (spec, params, prompt hash)."""
    if request.preset == "custom":
        assert request.prompt is not None
        digest = hashlib.sha256(request.prompt.encode()).hexdigest()
        return f"prompt:{digest}", {}, digest
    if request.preset == "bullets":
        bullets = request.bullets or DEFAULT_BULLETS
        return f"bullets:{bullets}", {"bullets": bullets}, None
    assert request.preset is not None
    return request.preset, {}, None


async def create_summary(
    session: AsyncSession,
    job: Job,
    request: SummaryRequest,
    settings: LlmSettings,
    *,
    source: str = "api",
) -> tuple[Summary, bool]:
    """Create the summary or return the existing one; returns (row, newly queued).

    A summary that had failed is queued again (nothing was stored, so nothing was paid
    for twice); a pending, running or completed one is returned as it is.
    """
    model = policy.check_model(request.model or settings.summary_model, settings)
    spec, params, prompt_hash = spec_of(request)
    now = utcnow()
    inserted = (
        await session.execute(
            insert(Summary)
            .values(
                id=uuid.uuid4(),
                job_id=job.id,
                spec=spec,
                preset=request.preset,
                prompt=request.prompt,
                prompt_hash=prompt_hash,
                params=params,
                model=model,
                status=SummaryStatus.pending.value,
                prompt_tokens=0,
                completion_tokens=0,
                llm_calls=0,
                source=source,
                attempts=0,
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing(constraint="uq_summaries_job_id_spec_model")
            .returning(Summary.id)
        )
    ).scalar_one_or_none()
    row = (
        await session.execute(
            select(Summary)
            .where(Summary.job_id == job.id, Summary.spec == spec, Summary.model == model)
            .execution_options(populate_existing=True)
        )
    ).scalar_one()
    if inserted is not None:
        return row, True
    if row.status == SummaryStatus.error.value:
        row.status = SummaryStatus.pending.value
        row.error = None
        row.attempts = 0
        row.next_attempt_at = None
        row.updated_at = now
        await session.flush()
        return row, True
    return row, False


async def list_summaries(session: AsyncSession, job_id: uuid.UUID) -> list[Summary]:
    rows = await session.execute(
        select(Summary).where(Summary.job_id == job_id).order_by(Summary.created_at, Summary.id)
    )
    return list(rows.scalars())


def to_read(summary: Summary) -> SummaryRead:
    return SummaryRead(
        id=summary.id,
        transcript_id=summary.job_id,
        preset=summary.preset,
        prompt=summary.prompt,
        params=summary.params or {},
        model=summary.model,
        status=summary.status,
        text=summary.result_text,
        data=summary.result_json,
        usage=SummaryUsage(
            prompt_tokens=summary.prompt_tokens,
            completion_tokens=summary.completion_tokens,
            llm_calls=summary.llm_calls,
        ),
        error=summary.error,
        source=summary.source,
        created_at=summary.created_at,
        completed_at=summary.completed_at,
    )


def summary_views(summaries: list[Summary]) -> list[dict[str, Any]]:
    """JSON-ready summaries, for embedding in a transcript's own view."""
    return [to_read(s).model_dump(mode="json") for s in summaries]


# --- Text helpers ------------------------------------------------------------------------


def split_text(text: str, limit: int) -> list[str]:
    """Cut text into pieces of at most `limit` characters, at sentence or word ends."""
    text = text.strip()
    pieces: list[str] = []
    while len(text) > limit:
        window = text[:limit]
        cut = max(window.rfind(". "), window.rfind("? "), window.rfind("! "), window.rfind("\n"))
        if cut < limit // 2:
            cut = window.rfind(" ")
        if cut <= 0:
            cut = limit - 1
        pieces.append(text[: cut + 1].strip())
        text = text[cut + 1 :].strip()
    if text:
        pieces.append(text)
    return pieces


_LIST_ITEM = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+(.*\S)\s*$")


def parse_list(text: str) -> list[str]:
    items = [m.group(1) for line in text.splitlines() if (m := _LIST_ITEM.match(line))]
    if items:
        return items
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) == 1 and lines[0].rstrip(".").lower() == "none":
        return []
    return lines


def clock(ms: int) -> str:
    seconds = max(0, ms) // 1000
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


@dataclass
class Chapter:
    start: int
    end: int
    texts: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return " ".join(self.texts)


def group_chapters(paragraphs: list[dict[str, Any]], chapter_chars: int) -> list[Chapter]:
    """Consecutive paragraphs grouped into chapters of about `chapter_chars` characters;
    each chapter's start and end are its first and last paragraph's timestamps."""
    chapters: list[Chapter] = []
    current: Chapter | None = None
    for paragraph in paragraphs:
        text = str(paragraph.get("text") or "").strip()
        start, end = paragraph.get("start"), paragraph.get("end")
        if not text or not isinstance(start, int) or not isinstance(end, int):
            continue
        if current is None or len(current.text) >= chapter_chars:
            current = Chapter(start=start, end=end)
            chapters.append(current)
        current.texts.append(text)
        current.end = end
    return chapters


_CHAPTER_LINE = re.compile(r"^\s*(\d+)[.):]\s*(.+?)\s*$")


def parse_chapter_lines(text: str) -> dict[int, tuple[str, str]]:
    found: dict[int, tuple[str, str]] = {}
    for line in text.splitlines():
        match = _CHAPTER_LINE.match(line)
        if not match:
            continue
        headline, _, summary = match.group(2).partition("|")
        found[int(match.group(1))] = (headline.strip(" *#"), summary.strip())
    return found


def fallback_headline(text: str, words: int = 8) -> str:
    parts = text.split()
    return " ".join(parts[:words]) + (" …" if len(parts) > words else "")


# --- Running -----------------------------------------------------------------------------


class LeaseLost(Exception):
    """Another instance took the summary over (our lease expired)."""


@dataclass
class Runner:
    """Runs one claimed summary's LLM calls, counting usage and keeping the lease alive."""

    sessionmaker: async_sessionmaker[AsyncSession]
    upstream: Upstream
    settings: LlmSettings
    summary: Summary
    key_id: uuid.UUID
    owner: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0

    async def ask(self, system: str, user: str) -> str:
        max_tokens = min(self.settings.summary_max_tokens, self.settings.max_tokens)
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        payload = {"model": self.summary.model, "messages": messages, "max_tokens": max_tokens}
        answer, usage = await service.complete(
            self.sessionmaker,
            self.upstream,
            self.settings,
            key_id=self.key_id,
            payload=payload,
            model=self.summary.model,
            reserve_tokens=max_tokens + policy.estimate_prompt_tokens(messages),
            kind="summary",
            summary_id=self.summary.id,
        )
        self.calls += 1
        self.prompt_tokens += usage.prompt_tokens
        self.completion_tokens += usage.completion_tokens
        await self.renew_lease()
        return service.answer_text(answer).strip()

    async def renew_lease(self) -> None:
        now = utcnow()
        async with self.sessionmaker() as session, session.begin():
            renewed = (
                await session.execute(
                    update(Summary)
                    .where(
                        Summary.id == self.summary.id,
                        Summary.lease_owner == self.owner,
                        Summary.status == SummaryStatus.running.value,
                    )
                    .values(
                        lease_expires_at=now + timedelta(seconds=self.settings.summary_lease_s),
                    )
                    .returning(Summary.id)
                )
            ).scalar_one_or_none()
        if renewed is None:
            raise LeaseLost()

    @contextlib.asynccontextmanager
    async def lease_kept(self) -> AsyncIterator[None]:
        """Extend our lease while the calls run: one completion may outlast the lease, and
        an expired lease lets any instance (this one too) run the summary again and pay
        twice. A dead instance stops extending, so after a crash the lease still expires."""
        interval = self.settings.summary_lease_s / 3

        async def renew() -> None:
            while True:
                await asyncio.sleep(interval)
                try:
                    await self.renew_lease()
                except LeaseLost:
                    return
                except Exception:
                    # A failed renewal is tried again next interval; the lease has 3 of them.
                    logger.warning(
                        "llm.summary.lease_renew_failed",
                        extra={"summary_id": str(self.summary.id)},
                        exc_info=True,
                    )

        async with running_alongside(renew(), "llm.summary.lease"):
            yield

    async def condensed(self, text: str, instruction: str) -> str:
        """Run `instruction` on the text, map-reducing when it exceeds the chunk budget."""
        limit = self.settings.summary_chunk_chars
        if len(text) <= limit:
            return await self.ask(instruction, text)
        notes = await self.notes(text)
        return await self.ask(instruction, notes)

    async def notes(self, text: str) -> str:
        limit = self.settings.summary_chunk_chars
        while True:
            pieces = split_text(text, limit)
            parts = []
            for index, piece in enumerate(pieces, start=1):
                system = PARTIAL_INSTRUCTION.format(index=index, total=len(pieces))
                parts.append(f"## Part {index}\n{await self.ask(system, piece)}")
            text = NOTES_PREFACE + "\n\n".join(parts)
            # Notes of very long transcripts may still be too long: condense them again.
            if len(text) <= limit or len(pieces) == 1:
                return text


async def _transcript_text(upstream: Upstream, job: Job) -> str:
    result = job.result
    if isinstance(result, dict) and isinstance(result.get("text"), str):
        return str(result["text"])
    if job.upstream_id is None:
        raise UpstreamClientError("The transcript has no upstream id.", status_code=409)
    fetched = await upstream.rest.get_transcript(job.upstream_id)
    return str(fetched.get("text") or "")


async def _paragraphs(
    sessionmaker: async_sessionmaker[AsyncSession], upstream: Upstream, job: Job
) -> list[dict[str, Any]]:
    """The job's paragraphs: from the sub-resource cache, else upstream (then cached)."""
    async with sessionmaker() as session:
        cached = (
            await session.execute(
                select(TranscriptResource.body).where(
                    TranscriptResource.job_id == job.id,
                    TranscriptResource.resource == "paragraphs",
                    TranscriptResource.params == "",
                )
            )
        ).scalar_one_or_none()
    if cached is not None:
        body = json.loads(cached)
    else:
        if job.upstream_id is None:
            raise UpstreamClientError("The transcript has no upstream id.", status_code=409)
        response = await upstream.rest.get_subresource(job.upstream_id, "paragraphs")
        body = response.json()
        async with sessionmaker() as session, session.begin():
            await session.execute(
                insert(TranscriptResource)
                .values(
                    job_id=job.id,
                    resource="paragraphs",
                    params="",
                    content_type=response.headers.get("content-type", "application/json"),
                    body=response.content,
                    created_at=utcnow(),
                )
                .on_conflict_do_nothing(constraint="uq_transcript_resources_job_resource_params")
            )
    paragraphs = body.get("paragraphs") if isinstance(body, dict) else None
    return [p for p in paragraphs or [] if isinstance(p, dict)]


async def _chapters(runner: Runner, job: Job) -> tuple[str, list[dict[str, Any]]]:
    settings = runner.settings
    paragraphs = await _paragraphs(runner.sessionmaker, runner.upstream, job)
    chapters = group_chapters(paragraphs, settings.chapter_chars)
    titles: dict[int, tuple[str, str]] = {}
    # Chapters are titled in batches that each fit the chunk budget.
    limit = settings.summary_chunk_chars
    batch: list[tuple[int, str]] = []
    size = 0

    async def flush() -> None:
        if not batch:
            return
        user = "\n\n".join(f"Chapter {n}:\n{text}" for n, text in batch)
        titles.update(parse_chapter_lines(await runner.ask(INSTRUCTIONS["chapters"], user)))
        batch.clear()

    for number, chapter in enumerate(chapters, start=1):
        text = chapter.text[: max(200, limit - 200)]
        if batch and size + len(text) > limit:
            await flush()
            size = 0
        batch.append((number, text))
        size += len(text)
    await flush()
    data: list[dict[str, Any]] = []
    for number, chapter in enumerate(chapters, start=1):
        headline, summary = titles.get(number, ("", ""))
        data.append(
            {
                "headline": headline or fallback_headline(chapter.text),
                "summary": summary,
                "start": chapter.start,
                "end": chapter.end,
            }
        )
    text = "\n\n".join(
        f"[{clock(c['start'])}–{clock(c['end'])}] {c['headline']}"
        + (f"\n{c['summary']}" if c["summary"] else "")
        for c in data
    )
    return text, data


async def _produce(runner: Runner, job: Job, upstream: Upstream) -> tuple[str, Any]:
    summary = runner.summary
    if summary.preset == "chapters":
        return await _chapters(runner, job)
    text = await _transcript_text(upstream, job)
    if not text.strip():
        # Nothing was said: there is nothing to pay a model for.
        return "", [] if summary.preset in ("bullets", "action_items") else None
    if summary.preset == "custom":
        assert summary.prompt is not None
        return await runner.condensed(text, summary.prompt), None
    instruction = INSTRUCTIONS[summary.preset].format(
        bullets=(summary.params or {}).get("bullets", DEFAULT_BULLETS)
    )
    answer = await runner.condensed(text, instruction)
    if summary.preset in ("bullets", "action_items"):
        return answer, parse_list(answer)
    return answer, None


def _retry_delay(attempts: int) -> float:
    return float(min(RETRY_MAX_S, RETRY_BASE_S * 2 ** max(0, attempts - 1)))


async def _finish(
    sessionmaker: async_sessionmaker[AsyncSession],
    summary_id: uuid.UUID,
    owner: str,
    values: dict[str, Any],
    *,
    publish: bool,
) -> Summary | None:
    """Write the outcome if our lease still holds; publish the event in the same commit."""
    now = utcnow()
    async with sessionmaker() as session, session.begin():
        row = (
            await session.execute(
                select(Summary)
                .where(
                    Summary.id == summary_id,
                    Summary.lease_owner == owner,
                    Summary.status == SummaryStatus.running.value,
                )
                .with_for_update()
            )
        ).scalar_one_or_none()
        if row is None:
            return None
        for name, value in values.items():
            setattr(row, name, value)
        row.lease_owner = None
        row.lease_expires_at = None
        row.updated_at = now
        await session.flush()
        if publish:
            job = await session.get(Job, row.job_id)
            if job is not None:
                await _publish(session, job, row)
        return row


async def _publish(session: AsyncSession, job: Job, summary: Summary) -> None:
    data = to_read(summary).model_dump(mode="json")
    await events.publish(events.JobChanged(session, job, SUMMARY_EVENT, data))


async def run_claimed_summary(
    sessionmaker: async_sessionmaker[AsyncSession],
    upstream: Upstream,
    settings: LlmSettings,
    summary_id: uuid.UUID,
    *,
    owner: str,
) -> str:
    """Run one summary this instance has claimed; returns the status it was left in."""
    async with sessionmaker() as session:
        summary = await session.get(Summary, summary_id)
        job = await session.get(Job, summary.job_id) if summary is not None else None
    if summary is None or job is None or summary.lease_owner != owner:
        return "lost"
    runner = Runner(sessionmaker, upstream, settings, summary, job.key_id, owner)
    log_extra = {"summary_id": str(summary_id), "job_id": str(job.id), "preset": summary.preset}
    try:
        async with runner.lease_kept():
            text, data = await _produce(runner, job, upstream)
    except asyncio.CancelledError:
        # Shutting down: hand the claim back so another instance runs it now. A call that
        # was in flight may be repeated — the same cost as a crash, at most once.
        with anyio.CancelScope(shield=True):
            await _finish(
                sessionmaker,
                summary_id,
                owner,
                {
                    "status": SummaryStatus.pending.value,
                    "attempts": max(0, summary.attempts - 1),
                    **_spent(summary, runner),
                },
                publish=False,
            )
        raise
    except LeaseLost:
        logger.warning("llm.summary.lease_lost", extra=log_extra)
        return "lost"
    except BudgetExceeded as exc:
        spent = _spent(summary, runner)
        # Not the summary's fault: wait for the day to roll, without counting an attempt.
        retry_at = utcnow() + timedelta(seconds=exc.retry_after or 3600)
        await _finish(
            sessionmaker,
            summary_id,
            owner,
            {
                "status": SummaryStatus.pending.value,
                "attempts": max(0, summary.attempts - 1),
                "next_attempt_at": retry_at,
                "error": f"Waiting for the daily LLM token budget: {exc.message}",
                **spent,
            },
            publish=False,
        )
        logger.info("llm.summary.budget_wait", extra=log_extra)
        return SummaryStatus.pending.value
    except (UpstreamClientError, BadRequest) as exc:
        # Upstream refused the request itself (4xx), or policy did (one call larger than
        # the whole daily budget): repeating it would fail the same way.
        spent = _spent(summary, runner)
        await _finish(
            sessionmaker,
            summary_id,
            owner,
            {"status": SummaryStatus.error.value, "error": exc.message, **spent},
            publish=True,
        )
        logger.warning("llm.summary.refused", extra={**log_extra, "error": exc.message})
        return SummaryStatus.error.value
    except Exception as exc:
        spent = _spent(summary, runner)
        message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        final = summary.attempts >= settings.summary_max_attempts
        values: dict[str, Any] = {"error": str(message)[:2000], **spent}
        if final:
            values["status"] = SummaryStatus.error.value
        else:
            values["status"] = SummaryStatus.pending.value
            values["next_attempt_at"] = utcnow() + timedelta(seconds=_retry_delay(summary.attempts))
        await _finish(sessionmaker, summary_id, owner, values, publish=final)
        logger.warning(
            "llm.summary.failed",
            extra={**log_extra, "error_type": type(exc).__name__, "final": final},
        )
        return str(values["status"])
    spent = _spent(summary, runner)
    stored = await _finish(
        sessionmaker,
        summary_id,
        owner,
        {
            "status": SummaryStatus.completed.value,
            "result_text": text,
            "result_json": data,
            "error": None,
            "completed_at": utcnow(),
            "next_attempt_at": None,
            **spent,
        },
        publish=True,
    )
    if stored is None:
        logger.warning("llm.summary.lease_lost", extra=log_extra)
        return "lost"
    logger.info("llm.summary.completed", extra={**log_extra, "llm_calls": runner.calls})
    return SummaryStatus.completed.value


def _spent(summary: Summary, runner: Runner) -> dict[str, int]:
    """Usage so far, including earlier attempts' (every paid call counts)."""
    return {
        "prompt_tokens": summary.prompt_tokens + runner.prompt_tokens,
        "completion_tokens": summary.completion_tokens + runner.completion_tokens,
        "llm_calls": summary.llm_calls + runner.calls,
    }


# --- Summaries requested with a submit -----------------------------------------------------


def check_requests(
    requests: list[SummaryRequest], settings: LlmSettings, principal: Principal
) -> None:
    """Policy before anything is stored or sent: the `llm` scope, allowed models only."""
    if requests and not principal.has("llm"):
        raise Forbidden("Requesting summaries needs the 'llm' scope.")
    for request in requests:
        policy.check_model(request.model or settings.summary_model, settings)


async def queue_summaries(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: LlmSettings,
    job_id: uuid.UUID,
    requests: list[SummaryRequest],
) -> None:
    """Store pending summaries for a job (committed), to run when it completes.

    Called after the job row is committed and before the upstream submit, so a job that
    completes at once already has its summaries; duplicates in one request collapse.
    """
    if not requests:
        return
    now = utcnow()
    rows = []
    seen: set[tuple[str, str]] = set()
    for request in requests:
        model = policy.check_model(request.model or settings.summary_model, settings)
        spec, params, prompt_hash = spec_of(request)
        if (spec, model) in seen:
            continue
        seen.add((spec, model))
        rows.append(
            {
                "id": uuid.uuid4(),
                "job_id": job_id,
                "spec": spec,
                "preset": request.preset,
                "prompt": request.prompt,
                "prompt_hash": prompt_hash,
                "params": params,
                "model": model,
                "status": SummaryStatus.pending.value,
                "prompt_tokens": 0,
                "completion_tokens": 0,
                "llm_calls": 0,
                "source": "submit",
                "attempts": 0,
                "created_at": now,
                "updated_at": now,
            }
        )
    async with sessionmaker() as session, session.begin():
        await session.execute(
            insert(Summary)
            .values(rows)
            .on_conflict_do_nothing(constraint="uq_summaries_job_id_spec_model")
        )


async def forget_summaries(session: AsyncSession, job_id: uuid.UUID) -> None:
    """Delete a job's summaries (a deleted transcript keeps none of its text)."""
    await session.execute(delete(Summary).where(Summary.job_id == job_id))


# --- Subscriptions (app/llm/__init__.py): summaries asked with a submit -------------------


def _requested(options: object) -> list[SummaryRequest]:
    return options.summaries if isinstance(options, AppSubmitOptions) else []


@dataclass(frozen=True)
class SubmitSummaries:
    """The summaries asked with a submit, under the llm part of the app's settings (bound
    when the app is made: app/llm/__init__.py's `subscribe_with`)."""

    settings: LlmSettings

    async def on_job_requested(self, event: events.JobRequested) -> None:
        """Refuse, before anything is stored, summaries the caller may not have."""
        check_requests(_requested(event.options), self.settings, event.principal)

    async def on_job_created(self, event: events.JobCreated) -> None:
        """Queue the summaries asked with the submit (run when the job completes)."""
        requested = _requested(event.options)
        await queue_summaries(event.sessionmaker, self.settings, event.job_id, requested)


async def on_job_changed(event: events.JobChanged) -> None:
    if event.event == "deleted":
        await forget_summaries(event.session, event.job.id)


async def on_job_shown(event: events.JobShown) -> None:
    event.parts["summaries"] = summary_views(await list_summaries(event.session, event.job.id))
