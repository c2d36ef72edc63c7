"""Events: how one feature tells others what happened without importing them.

A feature publishes a typed event; the features that care subscribe to its type. Both
sides import only this module, so the import graph keeps no arrow between them
(tests/test_architecture.py). Delivery is in process and synchronous: `publish` awaits
every handler in subscription order, inside the publisher's transaction when the event
carries a session, and a handler's exception reaches the publisher (a subscriber may
refuse what is being done).

Which features publish and subscribe what:

- `JobRequested`: transcripts, before a submit stores anything; llm checks the summaries
  requested with it (scope, model) and may refuse.
- `JobCreated`: transcripts, once the job row is committed and before the upstream
  submit; llm queues the requested summaries.
- `JobChanged`: transcripts (submit, reads, delete), webhooks (the reconciler) and llm (a
  summary finished); webhooks persists it (`job_events`), NOTIFYs the instances (live
  status over SSE, app/webhooks/hub.py) and queues the relay of final states; llm forgets a
  deleted job's summaries.
- `JobShown`: transcripts, when an owner reads a job; llm adds its summaries.
- `KeyCreated`: keys, when an admin creates a key; webhooks makes the key's relay signing
  secret (shown once in the answer).

Events carry data only, never settings. Subscriptions are made when a feature's package
is imported (its `__init__.py`); a handler that needs its feature's part of the settings
is bound to it when the app is made (app/main.py), and subscribing it again (another app,
other settings) replaces it.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.secretbox import SecretBox


@dataclass(frozen=True)
class JobRequested:
    """A caller asks for a job; nothing is stored yet (a handler may raise to refuse)."""

    principal: Any  # the caller (app.identity.Principal)
    options: Any  # the app surface's own requests for the job (AppSubmitOptions) or None


@dataclass(frozen=True)
class JobCreated:
    """The job row is committed; the upstream submit comes next."""

    sessionmaker: async_sessionmaker[AsyncSession]
    job_id: uuid.UUID
    options: Any


@dataclass(frozen=True)
class JobChanged:
    """Something happened to a job (`event`: its new status, "deleted", "summary", ...),
    published inside the transaction that did it: listeners hear of it only on commit."""

    session: AsyncSession
    job: Any  # the job row (app.transcripts.models.Job)
    event: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class KeyCreated:
    """A proxy key was created (in `session`'s transaction). Handlers may add fields to
    `shown_once`: secrets made for the key that its creation answer shows once."""

    session: AsyncSession
    key_id: uuid.UUID
    box: SecretBox  # seals what handlers store for the key (SECRETS_KEY)
    shown_once: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class JobShown:
    """A job is being shown to its owner (`GET /api/transcripts/{id}`): handlers add their
    part of the view to `parts` (llm: "summaries")."""

    session: AsyncSession
    job: Any
    parts: dict[str, Any] = field(default_factory=dict)


E = TypeVar("E")
Handler = Callable[[E], Awaitable[None]]

_handlers: dict[type[Any], list[Handler[Any]]] = defaultdict(list)


def _function(handler: Handler[Any]) -> object:
    """What a handler runs: a bound method's function, whatever it is bound to."""
    return getattr(handler, "__func__", handler)


def subscribe(event_type: type[E], handler: Handler[E]) -> None:
    """Call `handler` for every published event of `event_type`: once, however often a
    module subscribing it is imported. A method bound again (to another part of the
    settings) replaces the one bound before, in its place."""
    handlers = _handlers[event_type]
    for i, existing in enumerate(handlers):
        if _function(existing) is _function(handler):
            handlers[i] = handler
            return
    handlers.append(handler)


def subscribers(event_type: type[Any]) -> Sequence[Handler[Any]]:
    return tuple(_handlers[event_type])


async def publish(event: object) -> None:
    """Deliver `event` to its type's handlers, in order; the first error propagates."""
    for handler in _handlers[type(event)]:
        await handler(event)
