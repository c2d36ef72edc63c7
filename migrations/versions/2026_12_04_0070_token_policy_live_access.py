"""per-key live access (direct tokens, the relay, or both) and relay session caps

Revision ID: 0070
Revises: 0060
Create Date: 2026-12-04 17:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0070"
down_revision: str | Sequence[str] | None = "0060"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("token_policies", sa.Column("live_access", sa.String(length=8), nullable=True))
    op.add_column(
        "token_policies", sa.Column("relay_key_max_sessions", sa.Integer(), nullable=True)
    )
    op.add_column(
        "token_policies", sa.Column("relay_end_user_max_sessions", sa.Integer(), nullable=True)
    )


def downgrade() -> None:
    op.drop_column("token_policies", "relay_end_user_max_sessions")
    op.drop_column("token_policies", "relay_key_max_sessions")
    op.drop_column("token_policies", "live_access")
