"""Alembic environment: the URL comes from Tunesmith's settings, never from alembic.ini."""

from alembic import context

from tunesmith.db import models  # noqa: F401  (registers the tables on the metadata)
from tunesmith.db.base import Base
from tunesmith.db.session import get_engine

target_metadata = Base.metadata


def run_migrations_online() -> None:
    engine = get_engine()
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            # SQLite cannot ALTER most things; batch mode rebuilds tables so the same
            # migrations run on PostgreSQL and on the embedded SQLite file.
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
