"""The upstream client as a route dependency (created and closed by the app's lifespan).

It lives here rather than in `app/core/deps.py` because `upstream` is infrastructure one
floor above `core`: core imports nothing of ours (tests/test_architecture.py).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.upstream.client import Upstream


def _upstream(request: Request) -> Upstream:
    upstream: Upstream = request.app.state.upstream
    return upstream


UpstreamDep = Annotated[Upstream, Depends(_upstream)]
