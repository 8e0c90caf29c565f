"""Queue: a burst of one-step jobs through two workers.

Measures how long jobs wait between `queued` and `running`, how long a free worker takes to
pick up the next job (the hand-off), how busy each worker stayed, and what each job costs
around its single training step. The baseline is the same job run alone on idle workers.

The job count is a flag (default 200): with cold training processes (GPU nodes, or
TUNESMITH_WARM_START=false) each job spends ~8 s importing torch and friends and 200 jobs
take ~15 min on 2 cores; with fewer jobs the table gives the estimate for 200.
"""

import itertools
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, replace
from typing import Any

from bench.data import short_chat_rows, write_jsonl
from bench.report import Figure, median, percentile
from bench.stack import Stack
from bench.watch import JobTrace, Watcher

BENCH = "queue"
TARGET_JOBS = 200  # what the issue asks for; smaller runs are extrapolated to it


@dataclass(frozen=True)
class QueueSettings:
    jobs: int = TARGET_JOBS
    workers: int = 2
    alone: int = 2  # jobs run one at a time first, for the baseline


QUICK = QueueSettings(jobs=6, alone=1)


def settings_from(args: Any) -> QueueSettings:
    settings = QUICK if args.quick else QueueSettings()
    if args.queue_jobs:
        settings = replace(settings, jobs=args.queue_jobs)
    return settings


def _running(trace: JobTrace) -> float:
    return trace.status_seen["running"]


def _ended(trace: JobTrace) -> float:
    return next(trace.status_seen[s] for s in ("succeeded", "failed", "cancelled")
                if s in trace.status_seen)


def _span(trace: JobTrace, start: str, end: str) -> float | None:
    a, b = trace.first(start), trace.first(end)
    return b.seen_at - a.seen_at if a and b else None


def run_jobs(stack: Stack, project: Any, spec: dict[str, Any], count: int) -> tuple[
        list[JobTrace], float, float]:
    """POST `count` jobs at once; returns their traces, the first POST and the last end."""
    with Watcher(stack.engine) as watcher:
        posted = time.time()
        ids = []
        for _ in range(count):
            ids.append(project.create_job(spec)["id"])
            watcher.watch(ids[-1])
        watcher.wait(ids, timeout=120 + 60 * count)
    traces = [watcher.traces[i] for i in ids]
    failed = [t.job_id for t in traces if t.final_status != "succeeded"]
    if failed:
        raise RuntimeError(f"{len(failed)} queue jobs did not succeed, e.g. {failed[:3]}")
    return traces, posted, max(_ended(t) for t in traces)


def run(stack: Stack, settings: QueueSettings) -> tuple[list[Figure], dict[str, Any]]:
    stack.set_workers(settings.workers)
    project = stack.project("queue")
    data = write_jsonl(short_chat_rows(), stack.root / "queue.jsonl")
    upload = project.upload(data.read_bytes(), "queue.jsonl")
    spec = {"model": "tiny-llama", "training_file": upload["id"],
            "method": {"type": "supervised", "supervised": {"hyperparameters": {
                "max_steps": 1, "batch_size": 8}}},
            "tuning": {"type": "lora"}}
    # One job per worker first: a fresh worker's first job may pay a start-up later ones do
    # not (the warm start's fork server importing torch & co); reported on its own.
    first = run_jobs(stack, project, spec, settings.workers)[0]
    alone: list[JobTrace] = []
    for _ in range(settings.alone):
        alone += run_jobs(stack, project, spec, 1)[0]
    traces, posted, ended = run_jobs(stack, project, spec, settings.jobs)
    print(f"  queue: {settings.jobs} jobs in {ended - posted:.1f} s", flush=True)
    return figures(settings, first, alone, traces, posted, ended), {
        "settings": asdict(settings), "first": [_job_detail(t) for t in first],
        "alone": [_job_detail(t) for t in alone],
        "burst": [_job_detail(t) for t in traces], "burst_wall_s": ended - posted,
    }


def _job_detail(trace: JobTrace) -> dict[str, Any]:
    return {"job_id": trace.job_id, "worker": trace.worker_id,
            "dispatched_at": trace.dispatched_at, "running_seen": _running(trace),
            "ended_seen": _ended(trace), "child_peak_rss_kib": trace.child_peak_rss_kib,
            "events": [(e.message[:60], round(e.seen_at, 3)) for e in trace.events]}


def _wait(trace: JobTrace) -> float:
    """Queued → running: from the API's send to the broker to the claim being visible."""
    return _running(trace) - (trace.dispatched_at or _running(trace))


def figures(settings: QueueSettings, first: list[JobTrace], alone: list[JobTrace],
            traces: list[JobTrace], posted: float, ended: float) -> list[Figure]:
    n, wall = len(traces), ended - posted
    alone_wait = median([_wait(t) for t in alone])
    alone_run = median([_ended(t) - _running(t) for t in alone])
    waits = [_wait(t) for t in traces]
    runs = [_ended(t) - _running(t) for t in traces]
    by_worker: dict[str, list[JobTrace]] = defaultdict(list)
    for trace in sorted(traces, key=_running):
        # The claim event names the worker ("Job started on host:pid"); worker_id holds it.
        by_worker[trace.worker_id or "?"].append(trace)
    handoffs = [_running(b) - _ended(a) for jobs in by_worker.values()
                for a, b in itertools.pairwise(jobs)]
    out = [
        Figure(BENCH, f"queued → running, p50 ({n} jobs at once)", percentile(waits, 50), "s",
               "one job alone on idle workers", alone_wait,
               "mostly waiting for a free worker"),
        Figure(BENCH, "queued → running, p99", percentile(waits, 99), "s",
               "one job alone", alone_wait),
        Figure(BENCH, "hand-off: worker's job ended → its next job running, p50",
               percentile(handoffs, 50), "s", "queued → running alone", alone_wait,
               "ack, fetch, claim; 0 = seen in the same 50 ms poll"),
        Figure(BENCH, "hand-off p99", percentile(handoffs, 99), "s",
               "queued → running alone", alone_wait),
        Figure(BENCH, "job running time (running → succeeded), p50", percentile(runs, 50), "s",
               "same job alone", alone_run, "1 training step; the rest is overhead"),
        Figure(BENCH, "first job on a fresh worker: running time, median",
               median([_ended(t) - _running(t) for t in first]), "s", "same job alone, later",
               alone_run, "one job per worker at once, before the others"),
    ]
    for label, start, end in (
            ("  claim → process's first event (start or fork, job read)", "Job started on",
             "Training process started"),
            ("  first event → training begins (imports unless warm, model, trainer)",
             "Training process started", "Training to step"),
            ("  training begins → saved", "Training to step", "Saved "),
            ("  saved → succeeded", "Saved ", "The job has successfully")):
        spans = [s for t in traces if (s := _span(t, start, end)) is not None]
        out.append(Figure(BENCH, label + ", median", median(spans), "s",
                          "job running time p50", percentile(runs, 50)))
    for number, (worker, jobs) in enumerate(sorted(by_worker.items()), start=1):
        busy = sum(_ended(t) - _running(t) for t in jobs)
        out.append(Figure(BENCH, f"worker {number} busy (share of burst wall time)", busy, "s",
                          "burst wall time", wall, f"{len(jobs)} of {n} jobs; {worker}"))
    throughput = n / wall * 60
    ideal = settings.workers / alone_run * 60 if alone_run else None
    out.append(Figure(BENCH, "throughput", throughput, "jobs/min",
                      f"ideal: {settings.workers} workers / alone running time", ideal))
    estimate = TARGET_JOBS / throughput * 60
    note = ("measured" if n >= TARGET_JOBS else
            f"estimated from {n} jobs at the measured throughput")
    out.append(Figure(BENCH, f"wall time for {TARGET_JOBS} jobs", estimate, "s",
                      f"wall time for {n} jobs", wall, note))
    rss = [t.child_peak_rss_kib / 2**20 for t in traces if t.child_peak_rss_kib]
    out.append(Figure(BENCH, "training child peak RSS, max", max(rss) if rss else None, "GiB",
                      "alone", median([t.child_peak_rss_kib / 2**20 for t in alone
                                       if t.child_peak_rss_kib])))
    return out
