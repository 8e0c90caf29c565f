"""OpenAI's list object, shared by every listing."""

from typing import Generic, Literal, TypeVar

from pydantic import BaseModel

Item = TypeVar("Item")


class ListPage(BaseModel, Generic[Item]):
    """A page of a listing, newest first; `after=<last_id>` reads the next one."""

    object: Literal["list"]
    data: list[Item]
    has_more: bool
    # null on an empty page, or when the items carry no id (files of a checkpoint).
    first_id: str | None
    last_id: str | None
