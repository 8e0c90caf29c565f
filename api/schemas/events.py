"""A job's events, as OpenAI's event objects."""

from typing import Any, Literal

from pydantic import BaseModel

from api.schemas.lists import ListPage


class EventObject(BaseModel):
    id: str
    object: Literal["fine_tuning.job.event"]
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    # Always an object, as OpenAI's schema types it.
    data: dict[str, Any]
    type: str


class EventList(ListPage[EventObject]):
    pass
