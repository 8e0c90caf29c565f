"""The FastAPI app: routers, one error shape, and the reaper and webhook sender running
beside the API."""

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from api.console import mount_console
from api.errors import error_responses, install_error_handlers
from api.metrics import install_metrics
from api.rate_limit import install_rate_limit
from api.routes import (
    completions,
    events,
    exports,
    file_preview,
    files,
    health,
    job_outputs,
    jobs,
    methods,
    models,
    webhooks,
)
from tunesmith.reaper import start_reaper_thread
from tunesmith.settings import settings
from tunesmith.spec.job import JobSpec
from tunesmith.webhooks.sender import start_sender_thread

# What any /v1 route may answer besides its own errors: a value the database cannot hold
# (a NUL character in an id) or a request that does not match the schema, no or bad key,
# the rate limit, the database away.
V1_ERRORS = error_responses(400, 401, 429, 503)


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    settings.ensure_dirs()
    stop = threading.Event()
    threads = [start_reaper_thread(stop), start_sender_thread(stop)]
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=5)


def create_app() -> FastAPI:
    logging.basicConfig(level=logging.INFO)
    app = FastAPI(title="Tunesmith", version="0.1.0", lifespan=lifespan,
                  description="Fine-tune language models with any method over one REST API, "
                  "a superset of OpenAI's fine-tuning API.")
    install_error_handlers(app)
    install_rate_limit(app)
    install_metrics(app)
    for module in (files, file_preview, jobs, events, job_outputs, exports, methods, models,
                   completions, webhooks):
        app.include_router(module.router, responses=V1_ERRORS)
    app.include_router(health.router)
    mount_console(app)  # the web console at /console/, on the same /v1 API
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The generated schema, plus the job spec: `POST /v1/fine_tuning/jobs` reads its body
    itself (to hash the raw bytes for Idempotency-Key), so FastAPI cannot see the model."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version,
                             description=app.description, routes=app.routes)
        spec = JobSpec.model_json_schema(ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        spec_models = spec.pop("$defs", {})
        if clash := sorted(set(spec_models) & set(components) | {"JobSpec"} & set(components)):
            # One name would stand for two models; the response model's would be lost.
            raise RuntimeError(f"OpenAPI component names used by both the job spec and a "
                               f"route's models: {', '.join(clash)}; rename one.")
        components.update(spec_models)
        components["JobSpec"] = spec
        _drop_validation_422(schema)
        app.openapi_schema = schema
    return app.openapi_schema


def _drop_validation_422(schema: dict[str, Any]) -> None:
    """FastAPI documents a 422 on every route with parameters; ours answer 400 (as OpenAI
    does), in the one error shape that 400 already documents."""
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            if isinstance(operation, dict):
                operation.get("responses", {}).pop("422", None)
    components = schema.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)


app = create_app()
