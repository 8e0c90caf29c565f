"""The database schema's revision against the migrations' head.

The embedded default (a SQLite file) creates and upgrades its own schema on first use, so
`tunesmith keys create` works on a fresh home. A server database (PostgreSQL) is migrated
by its operator, once, with `tunesmith migrate`: commands refuse to run against one that is
behind, with that advice instead of a traceback from the first query.
"""

import fcntl
from pathlib import Path
from typing import TYPE_CHECKING

from tunesmith.settings import settings

if TYPE_CHECKING:  # alembic is imported when a command needs it, not on every start
    from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


class SchemaNotReady(RuntimeError):
    """The database lacks the schema this code needs; the message says what to run."""


def _config() -> "Config":
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade_to_head() -> None:
    """`alembic upgrade head` on the configured database."""
    from alembic import command

    from tunesmith.db.session import get_engine

    settings.ensure_dirs()
    command.upgrade(_config(), "head")
    get_engine().dispose()  # no migration connection is left for a forked child


def _revisions() -> tuple[str | None, str | None]:
    """(the database's revision, the migrations' head)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from tunesmith.db.session import make_engine

    head = ScriptDirectory.from_config(_config()).get_current_head()
    # An engine of its own, closed after: `tunesmith worker` checks before Celery forks its
    # pool, and a forked child must not inherit a pooled connection of the parent's.
    engine = make_engine(settings.sqlalchemy_url, pooled=False)
    try:
        with engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()
    return current, head


def ensure_schema() -> None:
    """Bring a SQLite database to the head revision; check a server database is there."""
    if settings.sqlalchemy_url.startswith("sqlite"):
        settings.ensure_dirs()
        # serve, its worker and a `keys create` may start together: one migrates at a time,
        # the others then find the schema at head and do nothing.
        with (settings.home_dir / ".migrate.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            current, head = _revisions()
            if current != head:
                upgrade_to_head()
        return
    try:
        current, head = _revisions()
    except Exception as exc:  # unreachable server, bad URL, missing database
        raise SchemaNotReady(f"cannot reach the database ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
    if current is None:
        raise SchemaNotReady("the database has no Tunesmith schema yet: run `tunesmith migrate`")
    if current != head:
        raise SchemaNotReady(f"the database schema is at revision {current}, this version "
                             f"needs {head}: run `tunesmith migrate`")
