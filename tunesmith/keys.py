"""API keys: random secrets shown once, stored as SHA-256 hashes with a visible prefix.

SHA-256 (not a slow password hash) is right here: keys are 32 random bytes, so there
is nothing to brute-force, and every request must verify one quickly.
"""

import hashlib
import secrets

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tunesmith.db.base import now
from tunesmith.db.models import ApiKey, Project
from tunesmith.db.session import rows_changed
from tunesmith.ids import new_id

KEY_PREFIX = "ts-"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(session: Session, *, project_name: str) -> tuple[ApiKey, str]:
    """A new key for the project (created if new). Returns the row and the secret."""
    project = session.scalar(sa.select(Project).where(Project.name == project_name))
    if project is None:
        project = Project(id=new_id("proj"), name=project_name)
        session.add(project)
        session.flush()
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(id=new_id("key"), project_id=project.id, prefix=secret[:10],
                 key_hash=hash_key(secret))
    session.add(key)
    session.flush()
    return key, secret


def project_for_key(session: Session, secret: str) -> Project | None:
    return session.scalar(
        sa.select(Project).join(ApiKey, ApiKey.project_id == Project.id)
        .where(ApiKey.key_hash == hash_key(secret), ApiKey.revoked_at.is_(None))
    )


def revoke_key(session: Session, *, prefix_or_id: str) -> int:
    """Revoke keys by id or visible prefix; returns how many were revoked."""
    return rows_changed(
        session,
        sa.update(ApiKey)
        .where(sa.or_(ApiKey.id == prefix_or_id, ApiKey.prefix == prefix_or_id),
               ApiKey.revoked_at.is_(None))
        .values(revoked_at=now()),
    )


def live_key_hashes(session: Session, key_hashes: set[str]) -> set[str]:
    """Those of `key_hashes` that name a key not revoked (open event streams check theirs)."""
    if not key_hashes:
        return set()
    return set(session.scalars(sa.select(ApiKey.key_hash).where(
        ApiKey.key_hash.in_(key_hashes), ApiKey.revoked_at.is_(None))))
