"""The embedded Postgres's lifecycle: started when no DATABASE_URL is set, stopped by the
command that started it (unless kept), inspected and stopped with `aai-proxy db`.

Postgres refuses to run as root. Run as root, pgserver runs the server as the system user
`pgserver`, which it creates with `useradd` when missing; that is done here first, said
aloud, with `useradd` found by absolute path (`/usr/sbin` is often not on root's PATH in
containers and `sudo` sessions).
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SYSTEM_USER = "pgserver"  # the name pgserver runs the server as under root
_SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")


class EmbeddedPostgresError(Exception):
    """A sentence for the operator (no traceback)."""


@dataclass(frozen=True)
class Embedded:
    data_dir: Path
    url: str
    started: bool  # by this process (False: it was running already, we attached)


def find_useradd() -> str | None:
    """`useradd` on PATH, else in the usual sbin directories."""
    return shutil.which("useradd") or shutil.which("useradd", path=os.pathsep.join(_SBIN))


def _as_root() -> bool:
    return os.geteuid() == 0


_OTHERS_RX = stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH


def closed_parents(data_dir: Path) -> list[Path]:
    """The folders above `data_dir` that other users cannot read and traverse: pgserver
    opens them (chmod g+rx,o+rx) so its system user reaches the data directory."""
    return [
        p for p in data_dir.parents if p.exists() and (p.stat().st_mode & _OTHERS_RX) != _OTHERS_RX
    ]


def prepare_system_user(data_dir: Path, say: Callable[[str], None]) -> None:
    """As root: make sure the user Postgres will run as exists, and say what is done."""
    if not _as_root():
        return
    opened = closed_parents(data_dir)
    if opened:
        say(
            f"As root, the data directory is given to `{SYSTEM_USER}` and these folders above it "
            "are made readable and traversable by other users (g+rx,o+rx) so it can reach it: "
            + ", ".join(str(p) for p in opened)
            + ". Set EMBEDDED_POSTGRES_DIR elsewhere, or DATABASE_URL, to avoid that."
        )
    why = "Running as root: Postgres refuses to run as root, so the embedded server runs as"
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        pass
    else:
        say(f"{why} the system user `{SYSTEM_USER}`.")
        return
    useradd = find_useradd()
    if useradd is None:
        raise EmbeddedPostgresError(
            f"{why} a system user `{SYSTEM_USER}`, which does not exist, and `useradd` was not "
            f"found (PATH, {', '.join(_SBIN)}). Create the user yourself, run as another "
            "user, or set DATABASE_URL to use your own Postgres server."
        )
    say(f"{why} a system user: creating `{SYSTEM_USER}` ({useradd} -s /bin/bash {SYSTEM_USER}).")
    done = subprocess.run(
        [useradd, "-s", "/bin/bash", SYSTEM_USER], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise EmbeddedPostgresError(
            f"Could not create the system user `{SYSTEM_USER}` ({useradd} exited "
            f"{done.returncode}: {done.stderr.strip()[:300]}). Create it yourself or set "
            "DATABASE_URL."
        )


def running_pid(data_dir: Path) -> int | None:
    """The postmaster's pid when a server runs on `data_dir`, else None."""
    from pgserver.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(data_dir.resolve())
    if info is None or not info.is_running():
        return None
    return int(info.pid) if info.pid is not None else None


def start(data_dir: Path, say: Callable[[str], None]) -> Embedded:
    """Start (or attach to) the embedded server on `data_dir`."""
    from app.core.db import start_embedded_postgres

    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    prepare_system_user(data_dir, say)
    was_running = running_pid(data_dir) is not None
    url = start_embedded_postgres(data_dir)
    return Embedded(data_dir, url, started=not was_running)


def stop(data_dir: Path) -> bool:
    """Stop the server on `data_dir` (fast shutdown: sessions end, data is safe). True when
    one was running."""
    from pgserver._commands import pg_ctl  # type: ignore[attr-defined]

    data_dir = data_dir.resolve()
    if running_pid(data_dir) is None:
        return False
    user = SYSTEM_USER if _as_root() else None
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=data_dir, user=user, timeout=60)
    return True
