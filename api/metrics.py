"""`GET /metrics` for Prometheus: request counts and latencies, and jobs by status."""

import time
from collections.abc import Awaitable, Callable, Iterable

import sqlalchemy as sa
from fastapi import FastAPI, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from tunesmith.db.models import Job
from tunesmith.db.session import new_session


class JobsByStatus(Collector):
    """Read at scrape time from the database, the source of truth for every API replica."""

    def collect(self) -> Iterable[GaugeMetricFamily]:
        gauge = GaugeMetricFamily("tunesmith_jobs", "Jobs by status", labels=["status"])
        with new_session() as session:
            for status, count in session.execute(
                    sa.select(Job.status, sa.func.count()).group_by(Job.status)):
                gauge.add_metric([status], count)
        yield gauge


def install_metrics(app: FastAPI) -> None:
    registry = CollectorRegistry()
    requests = Counter("tunesmith_http_requests", "HTTP requests",
                       ["method", "route", "status"], registry=registry)
    latency = Histogram("tunesmith_http_request_seconds", "HTTP request latency",
                        ["method", "route"], registry=registry)
    registry.register(JobsByStatus())

    @app.middleware("http")
    async def measure(request: Request,
                      call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        # The route template, not the path: ids would make one series per job.
        route = getattr(request.scope.get("route"), "path", "unmatched")
        requests.labels(request.method, route, str(response.status_code)).inc()
        latency.labels(request.method, route).observe(time.perf_counter() - started)
        return response

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
