"""Who may submit an upload_url: the key (and end user) that uploaded it through us.

Every key of this service shares one upstream key, so upstream's own rule (an upload_url
works only for the account that made it) no longer separates our tenants. Each completed
upload records a digest of its URL in a canonical form; a submit whose `audio_url` has the
digest of someone else's upload is refused before upstream is called. URLs we never
handed out (public audio) have no record and pass unchanged.

The canonical form ignores what a caller could vary while upstream still finds the same
file: scheme and host case (and a trailing dot), a default port, a query or fragment,
percent-escapes (in the host too), IDNA spellings of the host, dot segments,
backslashes, tabs and newlines, repeated or trailing slashes in the path.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import unquote, urlsplit

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.errors import Forbidden
from app.identity.principal import Principal
from app.uploads.models import Upload, UploadStatus

_DEFAULT_PORTS = {"http": 80, "https": 443}
_SLASHES = re.compile(r"/{2,}")
_IGNORED = re.compile(r"[\t\n\r]")


class UploadNotOwned(Forbidden):
    """The audio_url is an upload made through this service by another key or end user."""


def canonical_url(url: str) -> str:
    """The form under which an upload URL is recorded and looked up (see module doc)."""
    # A tab or newline inside a URL is dropped and a backslash read as a slash by the URL
    # parsers of browsers (WHATWG), so they vary nothing either.
    url = _IGNORED.sub("", url.strip()).replace("\\", "/")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return url
    scheme = parts.scheme.lower()
    host = _host(parts.hostname or "")
    netloc = host if port is None or port == _DEFAULT_PORTS.get(scheme) else f"{host}:{port}"
    # Dot segments (also escaped, `%2e`) are resolved by any HTTP client before it asks for
    # the file, so `/upload/./x` and `/a/../upload/x` name `/upload/x`.
    path = _SLASHES.sub("/", _without_dot_segments(unquote(parts.path))).rstrip("/")
    return f"{scheme}://{netloc}{path}"


def _host(hostname: str) -> str:
    """The host as a client resolves it: percent-escapes decoded (WHATWG) and IDNA applied,
    so `cdn%2Eexample.com`, fullwidth letters and ideographic full stops (`。`) name the
    same host as the plain spelling."""
    host = unquote(hostname)
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        pass  # not a valid IDNA name: compared as written
    return host.lower().rstrip(".")


def _without_dot_segments(path: str) -> str:
    """RFC 3986's remove_dot_segments, on the segments as they are (before repeated slashes
    are merged, as a client does)."""
    out: list[str] = []
    segments = path.split("/")
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == ".":
            if last:
                out.append("")
        elif segment == "..":
            if len(out) > 1:
                out.pop()
            if last:
                out.append("")
        else:
            out.append(segment)
    return "/".join(out)


def url_digest(url: str) -> str:
    return hashlib.sha256(canonical_url(url).encode("utf-8", "surrogatepass")).hexdigest()


def may_submit(principal: Principal, upload: Upload) -> bool:
    """Same key; a signed-in end user (session cookie or JWT) only their own uploads, as
    with jobs (a key caller sees every job of its key)."""
    if upload.key_id != principal.key_id:
        return False
    if principal.via != "key" and principal.end_user is not None:
        return upload.end_user == principal.end_user
    return True


async def check_audio_url(
    sessionmaker: async_sessionmaker[AsyncSession], principal: Principal, audio_url: str
) -> None:
    """Raise UploadNotOwned (403) when `audio_url` is another caller's upload."""
    async with sessionmaker() as session:
        uploads = list(
            await session.scalars(
                select(Upload).where(
                    Upload.upload_url_hash == url_digest(audio_url),
                    Upload.status == UploadStatus.completed.value,
                )
            )
        )
    if uploads and not any(may_submit(principal, upload) for upload in uploads):
        raise UploadNotOwned(
            "This audio_url is a file uploaded through this service by another caller; "
            "upload the file yourself (POST /v2/upload) and submit your own upload_url."
        )
