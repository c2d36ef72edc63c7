"""Alembic, driven from code: `serve` and `aai-proxy migrate` both come through here.

Alembic is imported only by the functions that migrate: the serving process needs just
the expected heads (for /readyz), and importing alembic (with mako and the parts of
SQLAlchemy it pulls in) would keep ~10 MB resident in every service process for nothing.
"""

from __future__ import annotations

import ast
import multiprocessing
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from app.core.db import async_url

if TYPE_CHECKING:
    from alembic.config import Config

ROOT = Path(__file__).resolve().parents[2]
VERSIONS = ROOT / "migrations" / "versions"


def alembic_config(database_url: str | None = None) -> Config:
    from alembic.config import Config

    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    if database_url is not None:
        # `%` must be escaped for configparser.
        config.set_main_option("sqlalchemy.url", async_url(database_url).replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "heads") -> None:
    from alembic import command

    command.upgrade(alembic_config(database_url), revision)


def upgrade_in_child(database_url: str, log: tuple[str, bool, Sequence[str]] | None = None) -> None:
    """`upgrade` to the heads in a short-lived child process, for `serve`: the serving
    process then never imports Alembic (~9 MB it would keep resident for nothing). `log`
    is `configure_logging`'s arguments, so the child's lines look like the parent's."""
    child = multiprocessing.get_context("spawn").Process(
        target=_upgrade_child, args=(database_url, log), name="aai-proxy-migrate"
    )
    child.start()
    child.join()
    if child.exitcode != 0:
        raise RuntimeError(f"the migration failed (exit code {child.exitcode}); see its log above")


def _upgrade_child(database_url: str, log: tuple[str, bool, Sequence[str]] | None) -> None:
    if log is not None:
        from app.core.logging import configure_logging

        configure_logging(*log)
    upgrade(database_url)


def downgrade(database_url: str, revision: str = "base") -> None:
    from alembic import command

    command.downgrade(alembic_config(database_url), revision)


def script_heads() -> set[str]:
    """The revisions no other revision builds on: what `upgrade heads` leaves applied."""
    heads = _declared_heads(VERSIONS)
    if heads is None:  # something only Alembic itself understands: ask it
        from alembic.script import ScriptDirectory

        return set(ScriptDirectory.from_config(alembic_config()).get_heads())
    return heads


def alembic_heads() -> set[str]:
    """The heads as Alembic computes them (tests check `script_heads` against it)."""
    from alembic.script import ScriptDirectory

    return set(ScriptDirectory.from_config(alembic_config()).get_heads())


def _declared_heads(versions: Path) -> set[str] | None:
    """Heads read from the revision files' literal `revision` and `down_revision`, without
    importing Alembic; None when a file has anything else (`depends_on`, computed ids)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in sorted(versions.glob("*.py")):
        if path.name.startswith(("__init__", ".#")):  # what Alembic skips too
            continue
        try:
            values = _literal_assignments(path.read_text(encoding="utf-8"))
        except (SyntaxError, ValueError):
            return None
        revision = values.get("revision")
        down = values.get("down_revision", _UNSET)
        if isinstance(down, str):
            down = (down,)
        elif down is None:
            down = ()
        if (
            not isinstance(revision, str)
            or values.get("depends_on") is not None
            or not isinstance(down, tuple | list)
            or not all(isinstance(parent, str) for parent in down)
        ):
            return None
        revisions.add(revision)
        parents.update(down)
    return revisions - parents


_UNSET = object()


def _literal_assignments(source: str) -> dict[str, object]:
    """Module-level `name = <literal>` and `name: T = <literal>` assignments."""
    values: dict[str, object] = {}
    for node in ast.parse(source).body:
        target: ast.expr
        if isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        elif isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        else:
            continue
        if isinstance(target, ast.Name):
            try:
                values[target.id] = ast.literal_eval(value)
            except ValueError:  # not a literal
                values[target.id] = _UNSET
    return values
