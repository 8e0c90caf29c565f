"""Job events: the log a user reads with `GET .../events`, written in the caller's transaction."""

import math
import re
from typing import Any, Literal, get_args

from sqlalchemy.orm import Session

from tunesmith.db.models import JobEvent

# OpenAI's event levels; nothing else is ever stored.
Level = Literal["info", "warn", "error"]

# At most 18 ASCII digits: every such number fits the BIGINT column, so a cursor never
# reaches the database as a value it cannot hold. (`str.isdigit` accepts "²" and "٣".)
_EVENT_ID = re.compile(r"ftevent-([0-9]{1,18})")


def add_event(
    session: Session,
    job_id: str,
    message: str,
    *,
    level: Level = "info",
    type: str = "message",
    data: dict[str, Any] | None = None,
) -> JobEvent:
    if level not in get_args(Level):  # no type checker runs in CI: refuse it here, loudly
        raise ValueError(f"event level {level!r} is not one of {get_args(Level)}")
    event = JobEvent(job_id=job_id, message=message, level=level, type=type,
                     data=finite_json(data))
    session.add(event)
    return event


def finite_json(value: Any) -> Any:
    """`value` with every NaN or infinite float replaced by None (JSON null), so that what is
    stored and sent is strict JSON: a diverged run's loss of NaN must not break a parser."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(item) for item in value]
    return value


def event_public_id(seq: int) -> str:
    return f"ftevent-{seq}"


def event_seq(public_id: str) -> int | None:
    """The sequence number of an event id, or None for an id that is not one of ours."""
    match = _EVENT_ID.fullmatch(public_id)
    return int(match.group(1)) if match else None
