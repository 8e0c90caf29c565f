"""index jobs by (project_id, status, id)

Creating a job counts the project's queued jobs; with only (status, lease_expires_at) that
count walked every project's queued jobs (bench/README.md, api_load scale figures). The new
index also serves `GET /v1/fine_tuning/jobs?status=` as one range, newest first.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 11:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index('ix_jobs_project_id_status_id', ['project_id', 'status', 'id'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_project_id_status_id')
