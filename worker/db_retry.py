"""Retry database writes through a restart of PostgreSQL, so no event is lost."""

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError

log = logging.getLogger(__name__)
T = TypeVar("T")


def with_db_retry(work: Callable[[], T], *, what: str, deadline_seconds: float = 120.0) -> T:
    """Run `work` (which opens its own session) until it succeeds or the deadline passes."""
    delay, started = 0.5, time.monotonic()
    while True:
        try:
            return work()
        except (OperationalError, DBAPIError) as exc:
            if not getattr(exc, "connection_invalidated", False) and not isinstance(
                    exc, OperationalError):
                raise
            if time.monotonic() - started > deadline_seconds:
                raise
            log.warning("database unavailable during %s (%s); retrying in %.1fs", what,
                        type(exc).__name__, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
