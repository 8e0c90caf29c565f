"""GIN index on jobs.metadata (PostgreSQL)

`GET /v1/fine_tuning/jobs?metadata[k]=v` walked the project's jobs newest first until it
found matches: 86 ms for a label on the oldest of 100,000 jobs against 11 ms at 1,000
(bench/README.md, api_load scale). A GIN index with jsonb_path_ops serves the `@>`
containment the route now uses. SQLite (the embedded default) gets a plain index from the
same declaration: unused, harmless.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 12:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index('ix_jobs_metadata', ['metadata'], unique=False,
                              postgresql_using='gin',
                              postgresql_ops={'metadata': 'jsonb_path_ops'})


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_metadata')
