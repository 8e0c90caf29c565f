"""Scale: one project grows from 1k jobs / 10k events to 100k / 1M (bulk inserts with
SQLAlchemy core, bench/bulk.py); each query's latency at the big size is divided by its
latency at the small one, and PostgreSQL's plan says which index served it.
"""

import json
import time
from dataclasses import dataclass
from typing import Any

import httpx
import sqlalchemy as sa

from bench import bulk
from bench.api_load import BENCH, NOWHERE, LoadSettings
from bench.data import short_chat_rows, write_jsonl
from bench.report import Figure, percentile
from bench.stack import Stack
from tunesmith.db.models import Project


@dataclass
class Query:
    name: str
    method: str
    path: str
    params: dict[str, Any]
    sql: str  # what the route asks PostgreSQL, for EXPLAIN
    sql_params: dict[str, Any]
    client: httpx.Client | None = None  # another project's key; default: the big project's


@dataclass
class QuietProject:
    """A second project with a few jobs older than all of the big project's."""

    data: bulk.ScaleData
    http: httpx.Client


def scale_queries(data: bulk.ScaleData, quiet: "QuietProject", deep_job: str,
                  deep_seq: int) -> list[Query]:
    p, long, short = data.project_id, data.long_job_id, bulk.job_id(data.first_ms, 1)
    jobs = "/v1/fine_tuning/jobs"
    list_sql = "SELECT * FROM jobs WHERE project_id = :p {where} ORDER BY id DESC LIMIT 21"
    events_sql = ("SELECT * FROM job_events WHERE job_id = :j {where} "
                  "ORDER BY seq DESC LIMIT 21")
    return [
        Query("retrieve a job", "GET", f"{jobs}/{long}", {},
              "SELECT * FROM jobs WHERE id = :j", {"j": long}),
        Query("list, first page", "GET", jobs, {"limit": 20},
              list_sql.format(where=""), {"p": p}),
        Query("list, deep page (after = 90% down)", "GET", jobs,
              {"limit": 20, "after": deep_job},
              list_sql.format(where="AND id < :a"), {"p": p, "a": deep_job}),
        Query("list of another project (3 jobs, older than the big project's)", "GET",
              jobs, {"limit": 20}, list_sql.format(where=""), {"p": quiet.data.project_id},
              client=quiet.http),
        Query("list ?status=failed, deep page", "GET", jobs,
              {"limit": 20, "after": deep_job, "status": "failed"},
              list_sql.format(where="AND id < :a AND status = 'failed'"),
              {"p": p, "a": deep_job}),
        Query("list ?status=running (2 in the project)", "GET", jobs,
              {"limit": 20, "status": "running"},
              list_sql.format(where="AND status = 'running'"), {"p": p}),
        Query("events, first page", "GET", f"{jobs}/{long}/events", {"limit": 20},
              events_sql.format(where=""), {"j": long}),
        Query("events, deep page (after = 90% down)", "GET", f"{jobs}/{long}/events",
              {"limit": 20, "after": f"ftevent-{deep_seq}"},
              events_sql.format(where="AND seq < :s"), {"j": long, "s": deep_seq}),
        Query("events of a job with 5 events", "GET", f"{jobs}/{short}/events", {"limit": 20},
              events_sql.format(where=""), {"j": short}),
        Query("create (counts the project's queued jobs)", "POST", jobs, {},
              "SELECT count(*) FROM jobs WHERE project_id = :p AND status = 'queued'",
              {"p": p}),
        # Last: a request the client gives up on keeps running in the API until it stops.
        Query("list ?metadata[team]=rare (1 match, the oldest)", "GET", jobs,
              {"limit": 20, "metadata[team]": "rare"},
              list_sql.format(where="AND metadata @> CAST(:m AS jsonb)"),
              {"p": p, "m": '{"team": "rare"}'}),
    ]


def explain(stack: Stack, query: Query, runs: int = 3) -> dict[str, Any]:
    """PostgreSQL's plan for the route's main query: the nodes, the indexes, and the fastest
    of `runs` executions (far steadier than HTTP latency on a busy machine)."""
    plans = []
    with stack.engine.connect() as connection:
        for _ in range(runs):
            plan = connection.scalar(sa.text("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) "
                                             + query.sql), query.sql_params)
            plans.append(json.loads(plan) if isinstance(plan, str) else plan)
    plan = min(plans, key=lambda p: p[0]["Execution Time"])
    nodes: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        label = node["Node Type"] + (f" {node['Scan Direction']}"
                                     if node.get("Scan Direction") == "Backward" else "")
        if node.get("Index Name"):
            label += f" using {node['Index Name']}"
        elif node.get("Relation Name"):
            label += f" on {node['Relation Name']}"
        if node.get("Rows Removed by Filter"):
            label += f" ({node['Rows Removed by Filter']} rows filtered out)"
        nodes.append(label)
        for child in node.get("Plans", []):
            walk(child)

    walk(plan[0]["Plan"])
    return {"nodes": nodes, "execution_ms": plan[0]["Execution Time"],
            "shared_buffers_read": plan[0]["Plan"].get("Shared Read Blocks", 0)
            + plan[0]["Plan"].get("Shared Hit Blocks", 0)}


def time_query(http: httpx.Client, query: Query, samples: int,
               spec: dict[str, Any]) -> list[float]:
    """Latencies of `samples` sequential requests, after one that warms caches."""
    latencies = []
    for _ in range(samples + 1):
        start = time.perf_counter()
        response = http.request(query.method, query.path, params=query.params,
                                json=spec if query.method == "POST" else None, timeout=60)
        latencies.append(time.perf_counter() - start)
        if response.status_code != 200:
            raise RuntimeError(f"{query.name}: {response.status_code} {response.text[:300]}")
    return latencies[1:]


def scale_phase(stack: Stack, settings: LoadSettings) -> tuple[list[Figure], dict[str, Any]]:
    project = stack.project("scale")
    upload = project.upload(write_jsonl(short_chat_rows(), stack.root / "scale.jsonl")
                            .read_bytes())
    spec = {"model": "tiny-llama", "training_file": upload["id"], "tuning": {"type": "lora"},
            "resources": NOWHERE}
    with stack.engine.connect() as connection:
        project_id = connection.scalar(sa.select(Project.id).where(Project.name == "scale"))
    data = bulk.ScaleData(project_id=project_id, file_id=upload["id"], spec=spec,
                          first_ms=int(time.time() * 1000) - 10**9)
    quiet_project = stack.project("quiet")
    with stack.engine.connect() as connection:
        quiet_id = connection.scalar(sa.select(Project.id).where(Project.name == "quiet"))
    quiet = QuietProject(bulk.ScaleData(project_id=quiet_id, file_id=upload["id"], spec=spec,
                                        first_ms=data.first_ms - 10**8), quiet_project.http)
    bulk.grow(stack.engine, quiet.data, jobs=3, events=0)
    measured: dict[str, dict[str, Any]] = {}
    for size, jobs, events in (("small", settings.small_jobs, settings.small_events),
                               ("big", settings.scale_jobs, settings.scale_events)):
        started = time.monotonic()
        bulk.grow(stack.engine, data, jobs=jobs, events=events)
        inserted = time.monotonic() - started
        print(f"  scale: {size} data ({jobs} jobs, {events} events) in {inserted:.0f} s",
              flush=True)
        queries = scale_queries(data, quiet, bulk.deep_job_id(stack.engine, data),
                                bulk.deep_event_seq(stack.engine, data))
        measured[size] = {"counts": bulk.counts(stack.engine, data), "insert_s": inserted}
        for query in queries:
            try:
                latencies = time_query(query.client or project.http, query,
                                       settings.samples, spec)
            except (httpx.HTTPError, RuntimeError) as exc:  # keep the other queries' figures
                measured[size][query.name] = {"error": f"{type(exc).__name__}: {exc}"[:200]}
                continue
            measured[size][query.name] = {
                "p50_ms": percentile(latencies, 50) * 1000,
                "p90_ms": percentile(latencies, 90) * 1000, "plan": explain(stack, query)}
            print(f"  scale {size}: {query.name}: "
                  f"{measured[size][query.name]['p50_ms']:.1f} ms", flush=True)
    out = []
    for query in queries:
        small, big = measured["small"][query.name], measured["big"][query.name]
        if "error" in small or "error" in big:
            out.append(Figure(BENCH, f"scale: {query.name}, p50", big.get("p50_ms"), "ms",
                              f"{settings.small_jobs:,} jobs", small.get("p50_ms"),
                              big.get("error") or small.get("error", "")))
            continue
        plan = big["plan"]
        note = (f"SQL {small['plan']['execution_ms']:.2f} → {plan['execution_ms']:.2f} ms; "
                f"plan at {settings.scale_jobs:,} jobs: {'; '.join(plan['nodes'][:3])}")
        out.append(Figure(BENCH, f"scale: {query.name}, p50", big["p50_ms"], "ms",
                          f"{settings.small_jobs:,} jobs/{settings.small_events:,} events",
                          small["p50_ms"], note))
    return out, {"measured": measured}
