"""upload_url digests (who may submit an upload) and secrets sealed with SECRETS_KEY

Upgrade: `uploads.upload_url_hash` (indexed), filled for the uploads already recorded;
relay signing secrets and callers' relay header values encrypted in place with the first
key of SECRETS_KEY (the development key when unset outside production). Downgrade
decrypts them (with any key of SECRETS_KEY) and drops the digest.

Revision ID: 0050
Revises: 0040
Create Date: 2026-12-04 15:40:00.000000
"""

from collections.abc import Callable, Sequence

import sqlalchemy as sa
from alembic import op

from app.core.config import Settings
from app.core.secretbox import secret_box
from app.uploads.ownership import url_digest

revision: str = "0050"
down_revision: str | Sequence[str] | None = "0040"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, key column, secret column)
SEALED = (
    ("webhook_signing_secrets", "id", "secret"),
    ("jobs", "id", "caller_webhook_auth_header_value"),
)


def _rewrite(table: str, key: str, column: str, change: Callable[[str], str]) -> None:
    bind = op.get_bind()
    rows = bind.execute(
        sa.text(f"SELECT {key}, {column} FROM {table} WHERE {column} IS NOT NULL")  # noqa: S608
    ).all()
    statement = sa.text(f"UPDATE {table} SET {column} = :value WHERE {key} = :key")  # noqa: S608
    for row_key, value in rows:
        bind.execute(statement, {"key": row_key, "value": change(value)})


def upgrade() -> None:
    op.add_column("uploads", sa.Column("upload_url_hash", sa.String(length=64), nullable=True))
    op.create_index("ix_uploads_upload_url_hash", "uploads", ["upload_url_hash"], unique=False)
    bind = op.get_bind()
    uploads = bind.execute(
        sa.text("SELECT id, upload_url FROM uploads WHERE upload_url IS NOT NULL")
    ).all()
    fill = sa.text("UPDATE uploads SET upload_url_hash = :digest WHERE id = :id")
    for upload_id, url in uploads:
        bind.execute(fill, {"id": upload_id, "digest": url_digest(url)})
    box = secret_box(Settings().secrets)
    for table, key, column in SEALED:
        _rewrite(table, key, column, box.seal)


def downgrade() -> None:
    box = secret_box(Settings().secrets)
    for table, key, column in SEALED:
        _rewrite(table, key, column, box.open)
    op.drop_index("ix_uploads_upload_url_hash", table_name="uploads")
    op.drop_column("uploads", "upload_url_hash")
