"""The file name of each job, for lists that show people names rather than ids.

A job submitted with a file (upload-and-submit, or an upload through `/api/uploads` then a
submit of its `upload_url`) has its name on the upload row; the job points at that row's
`upload_url`. The lookup is limited to the job's own key, so a name never crosses keys.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.transcripts.models import Job
from app.uploads.models import Upload


async def file_names(session: AsyncSession, jobs: Sequence[Job]) -> dict[uuid.UUID, str]:
    """Job id → the uploaded file's name, for the jobs that have one."""
    by_key: dict[uuid.UUID, set[str]] = {}
    for job in jobs:
        if job.audio_url:
            by_key.setdefault(job.key_id, set()).add(job.audio_url)
    names: dict[tuple[uuid.UUID, str], str] = {}
    for key_id, urls in by_key.items():
        rows = await session.execute(
            select(Upload.upload_url, Upload.filename).where(
                Upload.key_id == key_id,
                Upload.upload_url.in_(urls),
                Upload.filename.is_not(None),
            )
        )
        for url, name in rows:
            if url is not None and name:
                names[(key_id, url)] = name
    return {
        job.id: names[(job.key_id, job.audio_url)]
        for job in jobs
        if (job.key_id, job.audio_url) in names
    }
