"""The API under load, against PostgreSQL: rising concurrency, then a hundredfold more rows.

1. Load (here): create, retrieve, list and events at concurrency 1, 4, 16, 64 from an asyncio
   httpx client over loopback (a bounded number of requests per cell). Baseline:
   `/healthz`, a route with no database work, at the same concurrency: the ratio is the
   share of the HTTP floor a route keeps. Jobs created here go to a queue no worker reads,
   and no worker runs.
2. Scale (bench/scale.py): the same queries as the data grows from 1k jobs / 10k events to
   100k / 1M.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx

from bench import bulk
from bench.data import short_chat_rows, write_jsonl
from bench.report import Figure, percentile
from bench.stack import Stack
from tunesmith.db.models import JobEvent

BENCH = "api_load"
NOWHERE = {"gpu_class": "bench-nowhere"}  # queue gpu.bench-nowhere: no worker listens


@dataclass(frozen=True)
class LoadSettings:
    concurrency: tuple[int, ...] = (1, 4, 16, 64)
    requests: int = 400
    small_jobs: int = 1_000
    small_events: int = 10_000
    scale_jobs: int = 100_000
    scale_events: int = 1_000_000
    samples: int = 50  # sequential requests per query and size
    cell_budget_s: float = 60.0  # per route and concurrency


QUICK = LoadSettings(concurrency=(1, 8), requests=60, small_jobs=200, small_events=2_000,
                     scale_jobs=5_000, scale_events=50_000, samples=10)


def settings_from(args: Any) -> LoadSettings:
    settings = QUICK if args.quick else LoadSettings()
    overrides: dict[str, Any] = {}
    if args.requests:
        overrides["requests"] = args.requests
    if args.concurrency:
        overrides["concurrency"] = tuple(int(c) for c in args.concurrency.split(","))
    if args.scale_jobs:
        overrides["scale_jobs"] = args.scale_jobs
    if args.scale_events:
        overrides["scale_events"] = args.scale_events
    return replace(settings, **overrides)


@dataclass
class Cell:
    route: str
    concurrency: int
    wall: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: dict[int, int] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.wall

    def summary(self) -> dict[str, Any]:
        return {"route": self.route, "concurrency": self.concurrency, "requests":
                len(self.latencies), "rps": round(self.rps, 1),
                "p50_ms": round(percentile(self.latencies, 50) * 1000, 2),
                "p99_ms": round(percentile(self.latencies, 99) * 1000, 2),
                "errors": self.errors}


Request = Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]]


async def drive(url: str, headers: dict[str, str], route: str, request: Request, *,
                concurrency: int, total: int, budget_s: float) -> Cell:
    """`total` requests from `concurrency` tasks sharing one counter, every latency kept; no
    new request starts after `budget_s` (a stalled route must not hold up the run)."""
    cell = Cell(route, concurrency)
    numbers = iter(range(total))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits,
                                 timeout=120) as client:
        for i in range(min(concurrency, 8)):  # open connections before the clock starts
            await request(client, i)

        async def one_task() -> None:
            for i in numbers:
                if time.perf_counter() - started > budget_s:
                    return
                start = time.perf_counter()
                response = await request(client, i)
                cell.latencies.append(time.perf_counter() - start)
                if response.status_code >= 400:
                    cell.errors[response.status_code] = cell.errors.get(
                        response.status_code, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(one_task() for _ in range(concurrency)))
        cell.wall = time.perf_counter() - started
    return cell


def _rss_mib(pid: int) -> dict[str, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            fields[line.split(":")[0]] = int(line.split()[1]) / 1024
    return fields


def _add_events(stack: Stack, job: str, count: int) -> None:
    with stack.engine.begin() as connection:
        bulk.insert_rows(connection, JobEvent.__table__,
                         [bulk.event_row(job, int(time.time()), s) for s in range(count)])


def load_phase(stack: Stack, settings: LoadSettings) -> tuple[list[Figure], dict[str, Any]]:
    project = stack.project("load")
    upload = project.upload(write_jsonl(short_chat_rows(), stack.root / "load.jsonl").read_bytes())
    spec = {"model": "tiny-llama", "training_file": upload["id"], "tuning": {"type": "lora"},
            "resources": NOWHERE}
    events_job = project.create_job(spec)["id"]
    _add_events(stack, events_job, 100)
    created: list[str] = [events_job]
    headers = {"Authorization": f"Bearer {project.key}"}

    async def healthz(client: httpx.AsyncClient, i: int) -> httpx.Response:
        return await client.get("/healthz")

    async def create(client: httpx.AsyncClient, i: int) -> httpx.Response:
        response = await client.post("/v1/fine_tuning/jobs", json=spec)
        if response.status_code == 200:
            created.append(response.json()["id"])
        return response

    async def retrieve(client: httpx.AsyncClient, i: int) -> httpx.Response:
        return await client.get(f"/v1/fine_tuning/jobs/{created[i % len(created)]}")

    async def list_jobs(client: httpx.AsyncClient, i: int) -> httpx.Response:
        return await client.get("/v1/fine_tuning/jobs", params={"limit": 20})

    async def events(client: httpx.AsyncClient, i: int) -> httpx.Response:
        return await client.get(f"/v1/fine_tuning/jobs/{events_job}/events",
                                params={"limit": 20})

    routes: dict[str, Request] = {
        "GET /healthz": healthz, "POST /v1/fine_tuning/jobs": create,
        "GET /v1/fine_tuning/jobs/{id}": retrieve, "GET /v1/fine_tuning/jobs": list_jobs,
        "GET /v1/fine_tuning/jobs/{id}/events": events}
    rss_idle = _rss_mib(stack.api.pid)

    async def everything() -> list[Cell]:
        cells = []
        for concurrency in settings.concurrency:
            for route, request in routes.items():
                cells.append(await drive(stack.url, headers, route, request,
                                         concurrency=concurrency, total=settings.requests,
                                         budget_s=settings.cell_budget_s))
                print(f"  {route} c={concurrency}: {cells[-1].rps:.0f} req/s", flush=True)
        return cells

    cells = asyncio.run(everything())
    rss_after = _rss_mib(stack.api.pid)
    out = []
    for cell in cells:
        if cell.route == "GET /healthz":
            continue
        floor = next(c for c in cells if c.route == "GET /healthz"
                     and c.concurrency == cell.concurrency)
        s = cell.summary()
        errors = f"; errors {s['errors']}" if s["errors"] else ""
        cut = (f"; stopped after {settings.cell_budget_s:.0f} s at {s['requests']} requests"
               if s["requests"] < settings.requests else "")
        out.append(Figure(BENCH, f"{cell.route}, concurrency {cell.concurrency}", cell.rps,
                          "req/s", "GET /healthz", floor.rps,
                          f"p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms{errors}{cut}"))
    out.append(Figure(BENCH, "API process RSS after the load", rss_after["VmRSS"], "MiB",
                      "idle, before the load", rss_idle["VmRSS"],
                      f"peak {rss_after['VmHWM']:.0f} MiB"))
    return out, {"cells": [c.summary() for c in cells], "api_rss_mib": {
        "idle": rss_idle, "after": rss_after}, "jobs_created": len(created)}


def run(stack: Stack, settings: LoadSettings) -> tuple[list[Figure], dict[str, Any]]:
    from bench.scale import scale_phase  # here: bench.scale imports this module's settings

    stack.set_workers(0)
    load_figures, load_details = load_phase(stack, settings)
    scale_figures, scale_details = scale_phase(stack, settings)
    return load_figures + scale_figures, {"settings": asdict(settings), "load": load_details,
                                          "scale": scale_details}
