from __future__ import annotations

import uuid

from pydantic import BaseModel, Field


class UpstreamUpload(BaseModel):
    """What AssemblyAI's /v2/upload answers (the compatible surface answers it unchanged)."""

    upload_url: str


class UploadRead(UpstreamUpload):
    id: uuid.UUID = Field(description="Our record of this upload.")
    bytes: int = Field(description="Audio bytes sent upstream.")
