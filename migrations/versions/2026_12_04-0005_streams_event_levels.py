"""Event levels are OpenAI's: 'warning' becomes 'warn'

add_event now takes only `info`, `warn` and `error` (OpenAI's enum); rows written before
say `warning`, which strict OpenAI clients reject.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 16:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("UPDATE job_events SET level = 'warn' WHERE level = 'warning'")


def downgrade() -> None:
    op.execute("UPDATE job_events SET level = 'warning' WHERE level = 'warn'")
