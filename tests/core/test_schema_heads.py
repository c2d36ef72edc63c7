"""`script_heads` (what /readyz expects) reads the revision files without Alembic; it must
agree with Alembic's own answer on this tree and on branched and merged histories."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from app.core.migrate import (
    ROOT,
    _declared_heads,
    alembic_heads,
    script_heads,
    upgrade_in_child,
)


def _revision(
    directory: Path, rev: str, down: str | tuple[str, ...] | None, extra: str = ""
) -> None:
    (directory / f"{rev}_x.py").write_text(
        f'"""{rev}"""\n'
        "from collections.abc import Sequence\n"
        f"revision: str = {rev!r}\n"
        f"down_revision: str | Sequence[str] | None = {down!r}\n"
        "branch_labels = None\n"
        f"{extra or 'depends_on = None'}\n"
        "def upgrade() -> None: ...\n"
        "def downgrade() -> None: ...\n"
    )


def _alembic(directory: Path) -> set[str]:
    return set(ScriptDirectory(str(directory.parent)).get_heads())


def test_this_tree_agrees_with_alembic() -> None:
    assert script_heads() == alembic_heads()
    assert script_heads()


@pytest.mark.parametrize(
    "history",
    [
        [("a", None), ("b", "a"), ("c", "b")],
        [("a", None), ("b", "a"), ("c", "a")],  # two heads: two features branched off
        [("a", None), ("b", "a"), ("c", "a"), ("m", ("b", "c"))],  # merged again
    ],
)
def test_branches_and_merges_agree_with_alembic(
    tmp_path: Path, history: list[tuple[str, str | tuple[str, ...] | None]]
) -> None:
    versions = tmp_path / "versions"
    versions.mkdir()
    for rev, down in history:
        _revision(versions, rev, down)
    assert _declared_heads(versions) == _alembic(versions)


def test_anything_but_literals_is_left_to_alembic(tmp_path: Path) -> None:
    versions = tmp_path / "versions"
    versions.mkdir()
    _revision(versions, "a", None)
    _revision(versions, "b", "a", extra="depends_on = 'a'")
    assert _declared_heads(versions) is None
    (versions / "b_x.py").unlink()
    _revision(versions, "b", "a", extra="depends_on = None\nrevision = 'b' + ''")
    assert _declared_heads(versions) is None


def test_the_serving_process_does_not_import_alembic() -> None:
    # Importing Alembic would keep ~10 MB resident in every service process for nothing.
    code = "import sys, app.main; app.main.create_app(); print('alembic' in sys.modules)"
    env = {**os.environ, "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


def test_serve_migrates_in_a_child_and_reports_its_failure() -> None:
    # `serve` migrates in a child process (the server never imports Alembic); a failed
    # migration must still stop it. Success is covered by tests/e2e/test_serve.py.
    with pytest.raises(RuntimeError, match="migration failed"):
        upgrade_in_child("postgresql://nobody@127.0.0.1:1/none")
