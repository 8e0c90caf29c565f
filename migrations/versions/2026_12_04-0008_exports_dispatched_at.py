"""exports.dispatched_at: when the export's message was last sent, so the reaper sends again
a queued export whose message the broker lost (as jobs.dispatched_at does for jobs)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 19:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('exports', schema=None) as batch_op:
        batch_op.add_column(sa.Column('dispatched_at', sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('exports', schema=None) as batch_op:
        batch_op.drop_column('dispatched_at')
