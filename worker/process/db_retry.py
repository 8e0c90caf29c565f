"""Retry database writes through a restart of PostgreSQL, so no event is lost."""

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError

log = logging.getLogger(__name__)
T = TypeVar("T")


def is_db_outage(exc: BaseException) -> bool:
    """The database is away (restarting, failing over, unreachable), not our query at fault."""
    if isinstance(exc, OperationalError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def with_db_retry(work: Callable[[], T], *, what: str, deadline_seconds: float = 120.0) -> T:
    """Run `work` (which opens its own session) until it succeeds or the deadline passes."""
    delay, started = 0.5, time.monotonic()
    while True:
        try:
            return work()
        except DBAPIError as exc:
            if not is_db_outage(exc) or time.monotonic() - started > deadline_seconds:
                raise
            log.warning("database unavailable during %s (%s); retrying in %.1fs", what,
                        type(exc).__name__, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
