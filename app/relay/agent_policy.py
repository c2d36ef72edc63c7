"""A key's Voice Agent policy, applied to each `session.update` a client sends on `/v1/ws`.

Fields (each optional): `system_prompt`, `greeting`, `tools` (flat tool definitions),
`voices` (an allowlist of voice ids), and `locked` (which of "system_prompt", "greeting",
"tools", "voice" the client may not change).

The rule, per field set in the policy:
- **locked**: the client may omit the field (the policy's value is put in on the session's
  first `session.update`) or send exactly the policy's value; anything else is refused.
- **not locked** (merged): `system_prompt` becomes the policy's text, a blank line, then
  the client's; `greeting` is the client's, else the policy's; `tools` are the policy's
  plus the client's (the policy's definition wins on a name both use).
- **voices**: `output.voice` must be one of them (refused otherwise); a first
  `session.update` without a voice gets the first of the list. Locking "voice" means the
  client may not name one at all other than the first.

A refused `session.update` is not sent upstream: the client receives an `error` event in
upstream's shape, `{"type": "error", "code": "invalid_session", "message": "..."}`, and
the socket stays open (as upstream does for a refused update). Everything else passes
unchanged, tool calls and results included.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.relay.models import AgentPolicy

LOCKABLE = ("system_prompt", "greeting", "tools", "voice")


@dataclass(frozen=True)
class AgentRules:
    system_prompt: str | None = None
    greeting: str | None = None
    tools: tuple[dict[str, Any], ...] | None = None
    voices: tuple[str, ...] | None = None
    locked: frozenset[str] = frozenset()

    @property
    def empty(self) -> bool:
        return (
            self.system_prompt is None
            and self.greeting is None
            and self.tools is None
            and not self.voices
        )

    @classmethod
    def from_row(cls, row: AgentPolicy | None) -> AgentRules:
        if row is None:
            return cls()
        return cls(
            system_prompt=row.system_prompt,
            greeting=row.greeting,
            tools=tuple(row.tools) if row.tools is not None else None,
            voices=tuple(row.voices) if row.voices else None,
            locked=frozenset(row.locked or ()),
        )


class Refused(Exception):
    """A `session.update` the policy refuses; the message names the field."""


def error_event(message: str) -> str:
    return json.dumps({"type": "error", "code": "invalid_session", "message": message})


def _tool_names(tools: Any) -> list[str]:
    if not isinstance(tools, list):
        return []
    return [str(t.get("name")) for t in tools if isinstance(t, dict)]


def apply(rules: AgentRules, event: dict[str, Any], first: bool) -> dict[str, Any]:
    """The `session.update` to send upstream; Refused when a locked field would change."""
    session = event.get("session")
    if not isinstance(session, dict):
        session = {}
    session = dict(session)
    locked = rules.locked
    if rules.system_prompt is not None:
        given = session.get("system_prompt")
        if "system_prompt" in locked:
            if given is not None and given != rules.system_prompt:
                raise Refused("system_prompt is locked by the service's policy for this key")
            if given is None and first:
                session["system_prompt"] = rules.system_prompt
        elif given is None:
            if first:
                session["system_prompt"] = rules.system_prompt
        else:
            session["system_prompt"] = f"{rules.system_prompt}\n\n{given}"
    if rules.greeting is not None:
        given = session.get("greeting")
        if "greeting" in locked and given is not None and given != rules.greeting:
            raise Refused("greeting is locked by the service's policy for this key")
        if given is None and first:
            session["greeting"] = rules.greeting
    if rules.tools is not None:
        given = session.get("tools")
        if "tools" in locked:
            if given is not None and given != list(rules.tools):
                raise Refused("tools are locked by the service's policy for this key")
            if given is None and first:
                session["tools"] = list(rules.tools)
        elif given is not None or first:
            own = set(_tool_names(list(rules.tools)))
            theirs = [
                t for t in (given or []) if not (isinstance(t, dict) and t.get("name") in own)
            ]
            session["tools"] = [*rules.tools, *theirs]
    if rules.voices:
        output = session.get("output")
        output = dict(output) if isinstance(output, dict) else {}
        voice = output.get("voice")
        allowed = rules.voices[:1] if "voice" in locked else rules.voices
        if voice is not None and voice not in allowed:
            raise Refused(
                f"voice {str(voice)[:40]!r} is not allowed here; allowed: {', '.join(allowed)}"
            )
        if voice is None and first:
            output["voice"] = allowed[0]
            session["output"] = output
    return {**event, "session": session}


class AgentPolicyCache:
    """Per-key rules, cached for KEY_CACHE_TTL_S like the token policies."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], ttl: float) -> None:
        self.sessionmaker = sessionmaker
        self.ttl = ttl
        self._entries: dict[uuid.UUID, tuple[float, AgentRules]] = {}

    async def get(self, key_id: uuid.UUID) -> AgentRules:
        entry = self._entries.get(key_id)
        if entry is not None and entry[0] > time.monotonic():
            return entry[1]
        async with self.sessionmaker() as session:
            rules = AgentRules.from_row(await session.get(AgentPolicy, key_id))
        if self.ttl > 0:
            if len(self._entries) > 10_000:
                self._entries.clear()
            self._entries[key_id] = (time.monotonic() + self.ttl, rules)
        return rules

    def invalidate(self, key_id: uuid.UUID) -> None:
        self._entries.pop(key_id, None)
