"""Open event streams must not slow other tenants: another project's `GET /v1/fine_tuning/jobs`
latency before, and while one key holds 50 streams open on a job that logs 10 events a second.

Baseline: the same requests, same client, before any stream is open. Also counted: the
database connections in use (PostgreSQL's pg_stat_activity) before and during; streams that
held one while they waited would show 50 more.

    python -m bench --only event_streams [--quick]
"""

import asyncio
import threading
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.orm import Session

from bench.data import short_chat_rows, write_jsonl
from bench.report import Figure, percentile
from bench.stack import Stack
from tunesmith.jobs.events import add_event

BENCH = "event_streams"
NOWHERE = {"gpu_class": "bench-nowhere"}  # queue gpu.bench-nowhere: no worker listens


@dataclass(frozen=True)
class StreamSettings:
    streams: int = 50
    requests: int = 300  # sequential GETs by the other project, per phase
    events_per_second: float = 10.0


QUICK = StreamSettings(requests=60)


def settings_from(args: Any) -> StreamSettings:
    settings = QUICK if args.quick else StreamSettings()
    return replace(settings, requests=args.requests) if args.requests else settings


def _connections_in_use(stack: Stack) -> int:
    """Connections to the service's database in a query or a transaction (not idle in a
    pool), other than this one; a stream that held its request's session shows here."""
    with stack.engine.connect() as connection:
        return connection.scalar(sa.text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND backend_type = 'client backend' "
            "AND state <> 'idle'"))


async def _latencies(client: httpx.AsyncClient, count: int) -> tuple[list[float], dict[int, int]]:
    latencies, errors = [], {}
    for _ in range(count):
        start = time.perf_counter()
        response = await client.get("/v1/fine_tuning/jobs", params={"limit": 20})
        latencies.append(time.perf_counter() - start)
        if response.status_code != 200:
            errors[response.status_code] = errors.get(response.status_code, 0) + 1
    return latencies, errors


def _log_events(stack: Stack, job_id: str, per_second: float, stop: threading.Event) -> int:
    """A training job's metrics events, written as its callback writes them."""
    written = 0
    with Session(stack.engine) as session:
        while not stop.wait(1 / per_second):
            add_event(session, job_id, f"step {written}", type="metrics",
                      data={"step": written, "train_loss": 1.0 / (written + 1)})
            session.commit()
            written += 1
    return written


def run(stack: Stack, settings: StreamSettings) -> tuple[list[Figure], dict[str, Any]]:
    stack.set_workers(0)
    noisy, quiet = stack.project("streams-noisy"), stack.project("streams-quiet")
    rows = write_jsonl(short_chat_rows(), stack.root / "streams.jsonl").read_bytes()
    spec = {"model": "tiny-llama", "tuning": {"type": "lora"}, "resources": NOWHERE}
    job_id = noisy.create_job({**spec, "training_file": noisy.upload(rows)["id"]})["id"]
    quiet_file = quiet.upload(rows)["id"]
    for _ in range(20):
        quiet.create_job({**spec, "training_file": quiet_file})
    received = [0] * settings.streams

    async def follow(client: httpx.AsyncClient, i: int) -> None:
        async with client.stream("GET", f"/v1/fine_tuning/jobs/{job_id}/events",
                                 params={"stream": "true"}) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                received[i] += line.startswith("data: ")

    async def measure() -> dict[str, Any]:
        limits = httpx.Limits(max_connections=settings.streams + 1)
        async with (httpx.AsyncClient(base_url=stack.url, headers=quiet.http.headers,
                                      timeout=60) as client,
                    httpx.AsyncClient(base_url=stack.url, headers=noisy.http.headers,
                                      timeout=None, limits=limits) as streams):
            await _latencies(client, 10)  # warm connection and caches
            before, before_errors = await _latencies(client, settings.requests)
            connections_before = _connections_in_use(stack)
            tasks = [asyncio.create_task(follow(streams, i)) for i in range(settings.streams)]
            deadline = time.monotonic() + 60
            while min(received) == 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            opened = sum(1 for n in received if n)
            stop = threading.Event()
            logger = asyncio.create_task(asyncio.to_thread(
                _log_events, stack, job_id, settings.events_per_second, stop))
            during, during_errors = await _latencies(client, settings.requests)
            connections_during = _connections_in_use(stack)
            stop.set()
            written = await logger
            await asyncio.sleep(1.5)  # let the streams catch up before counting
            delivered = sum(received)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return {"before": before, "during": during, "errors_before": before_errors,
                "errors_during": during_errors, "streams_open": opened,
                "events_written": written, "messages_delivered": delivered,
                "connections_before": connections_before,
                "connections_during": connections_during}

    m = asyncio.run(measure())
    p = {phase: {q: percentile(m[phase], q) * 1000 for q in (50, 99)}
         for phase in ("before", "during")}
    note = (f"{m['streams_open']} streams open on one key, {m['events_written']} events "
            f"logged during, {m['messages_delivered']} messages delivered; errors "
            f"{m['errors_during'] or 'none'}")
    figures = [
        Figure(BENCH, f"other project's GET /v1/fine_tuning/jobs p50, {settings.streams} "
               "streams open", p["during"][50], "ms", "p50 with no stream open",
               p["before"][50], note),
        Figure(BENCH, f"other project's GET /v1/fine_tuning/jobs p99, {settings.streams} "
               "streams open", p["during"][99], "ms", "p99 with no stream open",
               p["before"][99], note),
        Figure(BENCH, "database connections in use, streams open", m["connections_during"],
               "connections", "before the streams", m["connections_before"],
               "in a query or transaction, from pg_stat_activity; the event logger's included"),
    ]
    print(f"  p50 {p['before'][50]:.1f} -> {p['during'][50]:.1f} ms, p99 {p['before'][99]:.1f}"
          f" -> {p['during'][99]:.1f} ms; {note}", flush=True)
    details = {key: value for key, value in m.items() if key not in ("before", "during")}
    return figures, {"settings": asdict(settings), "latency_ms": p, **details}
