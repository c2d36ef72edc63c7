"""relay sessions (one row per relayed live session) and per-key Voice Agent policies

Revision ID: 0060
Revises: 0050
Create Date: 2026-12-04 15:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0060"
down_revision: str | Sequence[str] | None = "0050"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "relay_sessions",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("key_id", sa.UUID(), nullable=True),
        sa.Column("end_user", sa.String(length=200), nullable=True),
        sa.Column("via", sa.String(length=16), nullable=False),
        sa.Column("upstream_session_id", sa.String(length=100), nullable=True),
        sa.Column("speech_model", sa.String(length=100), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("session_s", sa.Float(), nullable=False),
        sa.Column("audio_s", sa.Float(), nullable=False),
        sa.Column("charged_s", sa.Integer(), nullable=False),
        sa.Column("close_code", sa.Integer(), nullable=True),
        sa.Column("close_reason", sa.String(length=200), nullable=True),
        sa.Column("ended_by", sa.String(length=32), nullable=True),
        sa.Column("client_terminated", sa.Boolean(), nullable=True),
        sa.ForeignKeyConstraint(
            ["key_id"],
            ["api_keys.id"],
            name=op.f("fk_relay_sessions_key_id_api_keys"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_relay_sessions")),
    )
    op.create_index(
        "ix_relay_sessions_key_id_started_at",
        "relay_sessions",
        ["key_id", "started_at"],
        unique=False,
    )
    op.create_table(
        "relay_agent_policies",
        sa.Column("key_id", sa.UUID(), nullable=False),
        sa.Column("system_prompt", sa.Text(), nullable=True),
        sa.Column("greeting", sa.Text(), nullable=True),
        sa.Column("tools", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("voices", postgresql.ARRAY(sa.Text()), nullable=True),
        sa.Column("locked", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["key_id"],
            ["api_keys.id"],
            name=op.f("fk_relay_agent_policies_key_id_api_keys"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("key_id", name=op.f("pk_relay_agent_policies")),
    )


def downgrade() -> None:
    op.drop_table("relay_agent_policies")
    op.drop_index("ix_relay_sessions_key_id_started_at", table_name="relay_sessions")
    op.drop_table("relay_sessions")
