"""One engine per process, built lazily from settings (so importing never touches a database)."""

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import CursorResult, Engine
from sqlalchemy.orm import Session, sessionmaker

from tunesmith.settings import settings


def _sqlite_pragmas(dbapi_connection: Any, _record: object) -> None:
    # WAL lets the API read while a training child writes events; the busy timeout
    # makes concurrent writers wait instead of failing with "database is locked".
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(url: str, *, pooled: bool = True) -> Engine:
    """`pooled=False`: every connection closes after use (an engine in a process that forks)."""
    pool = {} if pooled else {"poolclass": sa.pool.NullPool}
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                                  **pool)
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if not pooled:
        return sa.create_engine(url, pool_pre_ping=True, **pool)
    # At least the 40 threads FastAPI runs sync handlers in, so none waits for a connection.
    # pre_ping drops connections a restarted PostgreSQL closed, instead of failing a request.
    return sa.create_engine(url, pool_pre_ping=True, pool_size=20, max_overflow=30)


@cache
def get_engine() -> Engine:
    if settings.sqlalchemy_url.startswith("sqlite"):
        settings.ensure_dirs()
    return make_engine(settings.sqlalchemy_url)


@cache
def _session_factory() -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(), expire_on_commit=False)


def new_session() -> Session:
    return _session_factory()()


@contextmanager
def session_scope() -> Iterator[Session]:
    """A session whose work commits on success and rolls back on error."""
    session = new_session()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def rows_changed(session: Session, statement: sa.Update | sa.Delete) -> int:
    """Run an UPDATE or DELETE and return how many rows it matched: the guarded
    `UPDATE ... WHERE <expected state>` pattern tells who won a race by this count.
    `Session.execute` is typed as returning `Result`; for these statements it is a
    `CursorResult`, the class that carries `rowcount`."""
    result = session.execute(statement)
    assert isinstance(result, CursorResult)
    return result.rowcount
