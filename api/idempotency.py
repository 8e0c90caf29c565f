"""`Idempotency-Key`: a retried POST with the same key and body gets the first answer back."""

import hashlib

from sqlalchemy.orm import Session

from api.errors import Conflict
from tunesmith.db.models import IdempotencyRecord


def request_hash(*parts: bytes | str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\x00")
    return digest.hexdigest()


def replay(session: Session, *, project_id: str, route: str, key: str | None,
           body_hash: str) -> IdempotencyRecord | None:
    """The stored answer for this key, None for a new key, Conflict for a reused key."""
    if not key:
        return None
    record = session.get(IdempotencyRecord, (project_id, route, key))
    if record is None:
        return None
    if record.request_hash != body_hash:
        raise Conflict(f"Idempotency-Key '{key}' was already used with a different request.",
                       param="Idempotency-Key", code="idempotency_key_reused")
    return record


def remember(session: Session, *, project_id: str, route: str, key: str | None,
             body_hash: str, status_code: int, body: dict) -> None:
    """Store the answer in the caller's transaction, so it commits with what it describes."""
    if key:
        session.add(IdempotencyRecord(project_id=project_id, route=route, key=key,
                                      request_hash=body_hash, status_code=status_code, body=body))
