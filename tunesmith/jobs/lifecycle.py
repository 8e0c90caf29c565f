"""The one conditional UPDATE that writes a status, for jobs and exports alike.

A row moves to a state only from the states its table allows (`WHERE status IN (...)`) and,
with `owner`, only while that worker still holds it: two workers, a reaper and a cancel
request can race on one row and exactly one of them wins; the others see `False`.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tunesmith.db.base import now
from tunesmith.db.models import Export, Job

S = TypeVar("S", bound=StrEnum)


class Refused(Exception):
    """The row's status does not allow what was asked; `code` names the rule (the API
    answers 409 with it)."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Lifecycle(Generic[S]):
    """A table's states: which each may be entered from, and which are final."""

    table: type[Job] | type[Export]
    allowed_from: Mapping[S, frozenset[S]]
    terminal: frozenset[S]

    def change(self, session: Session, row_id: str, to: S, *, expect: set[S] | None = None,
               owner: str | None = None, **fields: Any) -> bool:
        """Move the row to `to` if it is in one of the `expect` states (default: any allowed
        one) and, with `owner`, still held by that worker. A final state stamps `finished_at`
        and drops the lease. `fields` are further columns set in the same UPDATE.

        Returns whether this call made the change; the caller commits."""
        allowed = self.allowed_from[to] if expect is None else self.allowed_from[to] & expect
        values: dict[str, Any] = {"status": to.value, **fields}
        if to in self.terminal:
            values.setdefault("finished_at", now())
            values.setdefault("lease_expires_at", None)
        table = self.table
        query = sa.update(table).where(table.id == row_id,
                                       table.status.in_([s.value for s in allowed]))
        if owner is not None:
            # A worker whose lease ran out must not write over the attempt that replaced it.
            query = query.where(table.worker_id == owner)
        result = session.execute(query.values(**values))
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]
