"""One project's writes that check then act, made one step: the queued-jobs cap (count, then
insert) and a file's deletion against the jobs that read it (check, then mark deleted)."""

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tunesmith.db.models import Project


def hold_project(session: Session, project_id: str) -> None:
    """Serialise with every other holder of this project until the transaction ends.

    PostgreSQL: a row lock on the project (`SELECT ... FOR UPDATE`); under READ COMMITTED
    the reads after it see what the previous holder committed. SQLite: the database's one
    write lock, taken by a first write; pysqlite opens the transaction only at that write,
    so the reads before it held no snapshot that could be stale."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.select(Project.id).where(Project.id == project_id)
                        .with_for_update())
    else:
        session.execute(sa.update(Project).where(Project.id == project_id)
                        .values(name=Project.name))
