"""Liveness and readiness for load balancers and compose health checks."""

import sqlalchemy as sa
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.schemas.health import Liveness, Readiness
from tunesmith.db.session import get_engine
from tunesmith.queue import celery_app
from tunesmith.settings import settings
from tunesmith.workers import live_queues

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Liveness)
def healthz() -> dict[str, str]:
    """The process answers."""
    return {"status": "ok"}


@router.get("/readyz", response_model=Readiness, responses={
    503: {"model": Readiness,
          "description": "The database or the broker is not answering, or no worker is alive"}})
def readyz() -> JSONResponse:
    """The database and the broker answer, and a live worker consumes the default queue."""
    checks: dict[str, str] = {}
    try:
        with get_engine().connect() as connection:
            connection.execute(sa.text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # any failure means not ready; say which
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        with celery_app().connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)
        checks["broker"] = "ok"
    except Exception as exc:
        checks["broker"] = f"error: {type(exc).__name__}"
    try:
        checks["workers"] = ("ok" if settings.queue in live_queues() else
                             f"error: no live worker consumes queue '{settings.queue}'")
    except Exception as exc:
        checks["workers"] = f"error: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ok" if ready else "unavailable", "checks": checks},
                        status_code=200 if ready else 503)
