"""Request dependencies: a database session and the project of the calling API key."""

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header
from sqlalchemy.orm import Session

from api.errors import Unauthorized
from tunesmith.db.models import Project
from tunesmith.db.session import new_session
from tunesmith.keys import project_for_key


def get_session() -> Iterator[Session]:
    session = new_session()
    try:
        yield session
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_session)]


def bearer_secret(authorization: str) -> str | None:
    """The key an Authorization header carries, as the key lookup reads it, or None if the
    header is not 'Bearer <key>'. The rate limit keys its buckets on this too, so two
    spellings of one key (extra spaces, 'bearer') share one bucket."""
    scheme, _, secret = authorization.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        return None
    return secret.strip()


def get_project(
    session: SessionDep, authorization: Annotated[str | None, Header()] = None
) -> Project:
    if not authorization:
        raise Unauthorized("Missing API key: send 'Authorization: Bearer <key>'. "
                           "Create one with `tunesmith keys create`.")
    secret = bearer_secret(authorization)
    if secret is None:
        raise Unauthorized("Malformed Authorization header: expected 'Bearer <key>'.")
    project = project_for_key(session, secret)
    if project is None:
        raise Unauthorized("Invalid or revoked API key.")
    return project


CurrentProject = Annotated[Project, Depends(get_project)]
