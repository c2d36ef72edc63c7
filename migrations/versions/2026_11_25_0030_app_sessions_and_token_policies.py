"""app sessions and per-key token policies

Revision ID: 0030
Revises: 0020
Create Date: 2026-11-25 10:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0030"
down_revision: str | Sequence[str] | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "app_sessions",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("key_id", sa.UUID(), nullable=False),
        sa.Column("end_user", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("client_ip", postgresql.INET(), nullable=True),
        sa.Column("user_agent", sa.String(length=500), nullable=True),
        sa.ForeignKeyConstraint(
            ["key_id"],
            ["api_keys.id"],
            name=op.f("fk_app_sessions_key_id_api_keys"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_app_sessions")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_app_sessions_token_hash")),
    )
    op.create_index(op.f("ix_app_sessions_key_id"), "app_sessions", ["key_id"], unique=False)
    op.create_table(
        "token_policies",
        sa.Column("key_id", sa.UUID(), nullable=False),
        sa.Column("max_expires_in_s", sa.Integer(), nullable=True),
        sa.Column("max_session_s", sa.Integer(), nullable=True),
        sa.Column("key_mints_per_minute", sa.Integer(), nullable=True),
        sa.Column("end_user_mints_per_minute", sa.Integer(), nullable=True),
        sa.Column("key_daily_session_s", sa.Integer(), nullable=True),
        sa.Column("end_user_daily_session_s", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["key_id"],
            ["api_keys.id"],
            name=op.f("fk_token_policies_key_id_api_keys"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("key_id", name=op.f("pk_token_policies")),
    )
    # Usage summaries group a key's token rows by time: one composite index serves them.
    op.create_index(
        "ix_audit_events_key_id_action_at",
        "audit_events",
        ["key_id", "action", "at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_audit_events_key_id_action_at", table_name="audit_events")
    op.drop_table("token_policies")
    op.drop_index(op.f("ix_app_sessions_key_id"), table_name="app_sessions")
    op.drop_table("app_sessions")
