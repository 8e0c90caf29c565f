"""Overhead: the same LoRA SFT run through the service and as a bare trl+peft script.

The service run is a real job (POST, worker, child, events, artifacts); the baseline is
`bench/bare_sft.py` in a subprocess with the SFTConfig values the job resolved, on the
same model folder, data and seed. Runs alternate service/bare to share the machine's
mood; each figure is the median over the repeats.
"""

import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from bench.data import long_chat_rows, write_jsonl
from bench.report import Figure, median
from bench.stack import Stack
from bench.watch import JobTrace, Watcher
from testbed.servers import REPO

BENCH = "overhead"
MODEL_NAME = "bench-llama"


@dataclass(frozen=True)
class OverheadSettings:
    hidden_size: int = 256
    num_layers: int = 4
    rows: int = 64
    max_steps: int = 60
    batch_size: int = 8
    repeats: int = 3


QUICK = OverheadSettings(hidden_size=64, num_layers=2, rows=16, max_steps=8, repeats=1)


def build_model(stack: Stack, settings: OverheadSettings) -> Path:
    folder = stack.models / MODEL_NAME
    code = ("import sys; from pathlib import Path; from worker.training.tiny_model import "
            "build_tiny_model; build_tiny_model(Path(sys.argv[1]), hidden_size=int(sys.argv[2]),"
            " num_layers=int(sys.argv[3]))")
    subprocess.run([sys.executable, "-c", code, str(folder), str(settings.hidden_size),
                    str(settings.num_layers)], cwd=REPO, env=stack.env, check=True,
                   capture_output=True, timeout=300)
    return folder


def _seen(trace: JobTrace, prefix: str) -> float | None:
    event = trace.first(prefix)
    return event.seen_at if event else None


def service_run(stack: Stack, project: Any, spec: dict[str, Any]) -> dict[str, Any]:
    with Watcher(stack.engine) as watcher:
        posted = time.time()
        job = project.create_job(spec)
        trace = watcher.watch(job["id"])
        watcher.wait([job["id"]], timeout=1800)
    job = project.job(job["id"])
    if job["status"] != "succeeded":
        raise RuntimeError(f"overhead job {job['id']} ended {job['status']}: {job['error']}")
    metrics = trace.metrics()
    total = job["progress"]["total_steps"]
    summary = next(e.data for e in reversed(metrics) if "train_runtime" in (e.data or {}))
    first_step = next(e.seen_at for e in metrics if (e.data or {}).get("step", 0) >= 1)
    last_step = next(e.seen_at for e in metrics if (e.data or {}).get("step", 0) >= total)
    return {
        "job_id": job["id"], "job": job,
        "times": {"posted": posted, "claimed": _seen(trace, "Job started on"),
                  "child_started": _seen(trace, "Training process started"),
                  "hyperparameters": _seen(trace, "Hyperparameters:"),
                  "model_ready": _seen(trace, "Model "),
                  "train_begin": _seen(trace, "Training to step"), "first_step": first_step,
                  "last_step": last_step, "saved": _seen(trace, "Saved "),
                  "succeeded": trace.status_seen["succeeded"]},
        "train_runtime": summary["train_runtime"],
        # The summary's mean loss: `train_loss` (older callbacks renamed it `loss`).
        "train_loss": summary.get("train_loss", summary.get("loss")),
        "tokens": job["trained_tokens"], "steps": job["progress"]["step"],
        "peak_rss_kib": trace.child_peak_rss_kib,
        "watcher_cpu_share": watcher.cpu_share,
    }


def bare_run(stack: Stack, model: Path, data: Path, job: dict[str, Any],
             out: Path) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    settings = out / "settings.json"
    settings.write_text(json.dumps({"hyperparameters": job["resolved_hyperparameters"],
                                    "tuning": job["tuning"], "seed": job["seed"]}))
    spawned = time.time()
    result = subprocess.run(
        [sys.executable, "-m", "bench.bare_sft", "--model", str(model), "--data", str(data),
         "--settings", str(settings), "--out", str(out)],
        cwd=REPO, env=stack.env, capture_output=True, text=True, timeout=1800)
    exited = time.time()
    if result.returncode != 0:
        raise RuntimeError(f"bare_sft failed:\n{result.stderr[-3000:]}")
    bare = json.loads((out / "result.json").read_text())
    bare["times"].update(spawned=spawned, exited=exited)
    return bare


def import_probe(env: dict[str, str], repeats: int = 2) -> dict[str, Any]:
    """Cold start and exit of a child-like process, phase by phase (bench/import_probe.py);
    the median of `repeats` fresh processes."""
    runs = []
    for _ in range(repeats):
        spawned = time.time()
        result = subprocess.run([sys.executable, "-m", "bench.import_probe"], cwd=REPO, env=env,
                                capture_output=True, text=True, timeout=600)
        exited = time.time()
        report = json.loads(result.stdout.strip().splitlines()[-1])
        stamp = next(json.loads(line)["atexit"] for line in result.stderr.splitlines()
                     if line.startswith('{"atexit"'))
        runs.append({"interpreter start": report["started"] - spawned, **report["imports"],
                     "exit (after atexit)": exited - stamp, "lifetime": exited - spawned})
    return {key: median([r[key] for r in runs]) for key in runs[0]}


def _phase(run: dict[str, Any], start: str, end: str) -> float | None:
    times = run["times"]
    if times.get(start) is None or times.get(end) is None:
        return None
    return times[end] - times[start]


def _med(runs: list[dict[str, Any]], start: str, end: str) -> float | None:
    return median([v for r in runs if (v := _phase(r, start, end)) is not None])


def run(stack: Stack, settings: OverheadSettings) -> tuple[list[Figure], dict[str, Any]]:
    stack.set_workers(1)
    model = build_model(stack, settings)
    data = write_jsonl(long_chat_rows(settings.rows), stack.root / "overhead.jsonl")
    project = stack.project("overhead")
    upload = project.upload(data.read_bytes(), "overhead.jsonl")
    spec = {"model": MODEL_NAME, "training_file": upload["id"], "seed": 42,
            "method": {"type": "supervised", "supervised": {"hyperparameters": {
                "max_steps": settings.max_steps, "batch_size": settings.batch_size,
                "learning_rate": 1e-3}}},
            "tuning": {"type": "lora", "r": 16, "alpha": 32}}
    # The first job on a fresh worker may pay what later jobs do not (a warm start forks
    # training processes from a server that imported torch & co once): a one-step job on
    # the tiny model first, reported on its own, and every measured job after it.
    first = service_run(stack, project, {**spec, "model": "tiny-llama", "method": {
        "type": "supervised", "supervised": {"hyperparameters": {"max_steps": 1}}}})
    services: list[dict[str, Any]] = []
    bares: list[dict[str, Any]] = []
    for repeat in range(settings.repeats):
        # Alternate which goes first, so a drift in machine load hits both alike.
        if repeat % 2 == 0:
            services.append(service_run(stack, project, spec))
            bares.append(bare_run(stack, model, data, services[-1]["job"],
                                  stack.root / f"bare-{repeat}"))
        else:
            bares.append(bare_run(stack, model, data, services[-1]["job"],
                                  stack.root / f"bare-{repeat}"))
            services.append(service_run(stack, project, spec))
        print(f"  overhead repeat {repeat + 1}/{settings.repeats}: service "
              f"{services[-1]['tokens'] / services[-1]['train_runtime']:.0f} tok/s, bare "
              f"{bares[-1]['tokens'] / bares[-1]['train_runtime']:.0f} tok/s", flush=True)
    probe = import_probe(stack.env)
    return figures(first, services, bares, dict(probe)), {
        "settings": asdict(settings), "spec": spec,
        "resolved_hyperparameters": services[-1]["job"]["resolved_hyperparameters"],
        "first_job": {k: v for k, v in first.items() if k != "job"},
        "service_runs": [{k: v for k, v in s.items() if k != "job"} for s in services],
        "bare_runs": bares, "cold_start_probe_s": probe,
    }


def figures(first: dict[str, Any], services: list[dict[str, Any]],
            bares: list[dict[str, Any]], probe: dict[str, float]) -> list[Figure]:
    def tps(r: dict[str, Any]) -> float:
        return r["tokens"] / r["train_runtime"]

    n = len(services)
    same = all(s["tokens"] == b["tokens"] and s["steps"] == b["steps"]
               for s, b in zip(services, bares, strict=True))
    work = "same steps and tokens" if same else "WARNING: steps or tokens differ"
    gaps = [abs(s["train_loss"] - b["train_loss"]) for s, b in zip(services, bares, strict=True)
            if s["train_loss"] is not None]
    if gaps:
        work += f"; mean train loss differs by at most {max(gaps):.2g}"
    rss = [s["peak_rss_kib"] / 2**20 for s in services if s["peak_rss_kib"]]
    out = [
        Figure(BENCH, "training throughput (tokens/train_runtime)",
               median([tps(s) for s in services]), "tokens/s", "bare trl+peft",
               median([tps(b) for b in bares]), f"median of {n}; {work}"),
        Figure(BENCH, "wall time, POST → succeeded", _med(services, "posted", "succeeded"), "s",
               "bare: spawn → exit", _med(bares, "spawned", "exited")),
        Figure(BENCH, "POST → first training step logged",
               _med(services, "posted", "first_step"), "s", "bare: spawn → first step",
               _med(bares, "spawned", "first_step"),
               f"polled every 50 ms (the polling used "
               f"{median([s['watcher_cpu_share'] for s in services]):.1%} of a core)"),
        Figure(BENCH, "  of which POST → job claimed by a worker",
               _med(services, "posted", "claimed"), "s", "service POST → first step",
               _med(services, "posted", "first_step")),
        Figure(BENCH, "claimed → training begins", _med(services, "claimed", "train_begin"),
               "s", "bare: spawn → train begins", _med(bares, "spawned", "train_begin"),
               "the training process's start"),
        Figure(BENCH, "  claimed → process's first event (start or fork, job read)",
               _med(services, "claimed", "child_started"), "s",
               "bare: interpreter start", _med(bares, "spawned", "started")),
        Figure(BENCH, "  → hyperparameters (imports unless warm, tokenizer, rows)",
               _med(services, "child_started", "hyperparameters"), "s",
               "bare: imports", _med(bares, "started", "imported")),
        Figure(BENCH, "  → model loaded and LoRA-wrapped",
               _med(services, "hyperparameters", "model_ready"), "s",
               "bare: tokenizer + model + LoRA", _med(bares, "imported", "model_loaded")),
        Figure(BENCH, "  → training begins (SFTTrainer set up, data tokenised)",
               _med(services, "model_ready", "train_begin"), "s", "bare",
               _med(bares, "model_loaded", "train_begin")),
        Figure(BENCH, "first job on a fresh worker: claimed → training begins",
               _phase(first, "claimed", "train_begin"), "s", "bare: spawn → train begins",
               _med(bares, "spawned", "train_begin"), "tiny model, 1 step"),
        Figure(BENCH, "last step → succeeded", _med(services, "last_step", "succeeded"), "s",
               "bare: last step → saved and exited", _med(bares, "last_step", "exited"),
               "incl. up to 0.5 s of the supervisor's polling"),
        Figure(BENCH, "training process peak RSS", median(rss) if rss else None, "GiB",
               "bare", median([b["peak_rss_kib"] / 2**20 for b in bares]),
               "service: VmHWM polled every 50 ms"),
    ]
    lifetime = probe.pop("lifetime")
    for name, seconds in probe.items():
        label = name if name in ("interpreter start", "exit (after atexit)") else f"import {name}"
        out.append(Figure(BENCH, f"  probe: {label}", seconds, "s",
                          "probe process, spawn → gone", lifetime,
                          "bench/import_probe.py, median of 2"))
    return out


def settings_from(args: Any) -> OverheadSettings:
    settings = QUICK if args.quick else OverheadSettings()
    if args.overhead_repeats:
        settings = replace(settings, repeats=args.overhead_repeats)
    return settings
