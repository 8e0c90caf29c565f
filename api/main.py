"""The FastAPI app: routers, one error shape, and the reaper running beside the API."""

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api.errors import install_error_handlers
from api.metrics import install_metrics
from api.rate_limit import install_rate_limit
from api.routes import files, health, job_outputs, jobs, methods
from tunesmith.reaper import start_reaper_thread
from tunesmith.settings import settings


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    settings.ensure_dirs()
    stop = threading.Event()
    thread = start_reaper_thread(stop)
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def create_app() -> FastAPI:
    logging.basicConfig(level=logging.INFO)
    app = FastAPI(title="Tunesmith", version="0.1.0", lifespan=lifespan,
                  description="Fine-tune language models with any method over one REST API, "
                  "a superset of OpenAI's fine-tuning API.")
    install_error_handlers(app)
    install_rate_limit(app)
    install_metrics(app)
    for module in (files, jobs, job_outputs, methods, health):
        app.include_router(module.router)
    return app


app = create_app()
