"""jobs.training_file_id nullable; worker_heartbeats

A multitask job names its files per task (`method.multitask.tasks[].file`) and has no
top-level `training_file`; the NOT NULL column made the README's own multitask example
answer 500. Workers renew a row each in worker_heartbeats, so /readyz and the reaper
know which queues a live worker consumes (the embedded broker cannot be pinged).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 15:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.alter_column('training_file_id', existing_type=sa.String(length=40),
                              nullable=True)
    op.create_table(
        'worker_heartbeats',
        sa.Column('hostname', sa.String(length=255), nullable=False),
        sa.Column('queues', sa.String(length=1000), nullable=False),
        sa.Column('pid', sa.Integer(), nullable=False),
        sa.Column('started_at', sa.Float(), nullable=False),
        sa.Column('heartbeat_at', sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint('hostname', name=op.f('pk_worker_heartbeats')),
    )


def downgrade() -> None:
    op.drop_table('worker_heartbeats')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.alter_column('training_file_id', existing_type=sa.String(length=40),
                              nullable=False)
