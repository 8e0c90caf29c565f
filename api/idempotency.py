"""`Idempotency-Key`: a retried POST with the same key and body gets the first answer back.

The key is claimed before the work starts: its row is inserted in a transaction of its own,
and the table's primary key (project, route, key) lets only one request in. Concurrent
retries then wait for the first answer instead of racing it to the unique constraint (which
answered 500), and a request that fails releases the key so that a retry can do the work.
"""

import hashlib
import time
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.errors import Conflict, InvalidRequest
from tunesmith.db.base import now
from tunesmith.db.models import IdempotencyRecord

MAX_KEY_LENGTH = 255  # the column's size; Stripe's limit too
IN_PROGRESS = 0  # status_code of a claimed key whose answer is not stored yet
WAIT_SECONDS = 10.0  # how long a concurrent retry waits for the first answer
# A claim this old was left by a process that died mid-request: a retry takes it over.
ABANDONED_SECONDS = 120


def request_hash(*parts: bytes | str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\x00")
    return digest.hexdigest()


def check_key(key: str | None) -> None:
    if key is not None and not 1 <= len(key) <= MAX_KEY_LENGTH:
        raise InvalidRequest(f"Idempotency-Key: must be 1 to {MAX_KEY_LENGTH} characters.",
                             param="Idempotency-Key", code="invalid_idempotency_key")


def claim(session: Session, *, project_id: str, route: str, key: str | None,
          body_hash: str) -> IdempotencyRecord | None:
    """Hold `key` for this request (committed at once), or the answer stored under it.

    None: go on, and `complete` or `release` the key. A record: the first request's answer.
    Conflict: the key was used with another body, or its first request is still running
    after WAIT_SECONDS."""
    if not key:
        return None
    check_key(key)
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        record = session.get(IdempotencyRecord, (project_id, route, key),
                             populate_existing=True)
        if record is None:
            session.add(IdempotencyRecord(project_id=project_id, route=route, key=key,
                                          request_hash=body_hash, status_code=IN_PROGRESS,
                                          body={}))
            try:
                session.commit()
                return None
            except IntegrityError:  # another request claimed it first: read its claim
                session.rollback()
                continue
        if record.request_hash != body_hash:
            raise Conflict(f"Idempotency-Key: '{key}' was already used with a different "
                           "request.", param="Idempotency-Key", code="idempotency_key_reused")
        if record.status_code != IN_PROGRESS:
            return record
        if record.created_at < now() - ABANDONED_SECONDS and _take_over(session, record):
            return None
        session.rollback()  # end the read; the next look sees the other request's commit
        if time.monotonic() > deadline:
            raise Conflict(f"Idempotency-Key: a request with key '{key}' is still in "
                           "progress; retry later.", param="Idempotency-Key",
                           code="idempotency_key_in_progress", headers={"Retry-After": "1"})
        time.sleep(0.05)


def _take_over(session: Session, record: IdempotencyRecord) -> bool:
    # An UPDATE answers a CursorResult, which counts the rows it changed.
    result = cast(CursorResult[Any], session.execute(
        sa.update(IdempotencyRecord)
        .where(IdempotencyRecord.project_id == record.project_id,
               IdempotencyRecord.route == record.route, IdempotencyRecord.key == record.key,
               IdempotencyRecord.status_code == IN_PROGRESS,
               IdempotencyRecord.created_at == record.created_at)
        .values(created_at=now())))
    taken = result.rowcount
    session.commit()
    return taken == 1


def complete(session: Session, *, project_id: str, route: str, key: str | None,
             status_code: int, body: dict[str, Any]) -> None:
    """Store the answer in the caller's transaction, so it commits with what it describes."""
    if key:
        session.execute(
            sa.update(IdempotencyRecord)
            .where(IdempotencyRecord.project_id == project_id, IdempotencyRecord.route == route,
                   IdempotencyRecord.key == key)
            .values(status_code=status_code, body=body))


def release(session: Session, *, project_id: str, route: str, key: str | None) -> None:
    """Free a claimed key whose request failed (after the caller's rollback): a retry then
    does the work instead of waiting for an answer that never comes."""
    if not key:
        return
    session.rollback()
    session.execute(
        sa.delete(IdempotencyRecord)
        .where(IdempotencyRecord.project_id == project_id, IdempotencyRecord.route == route,
               IdempotencyRecord.key == key, IdempotencyRecord.status_code == IN_PROGRESS))
    session.commit()
