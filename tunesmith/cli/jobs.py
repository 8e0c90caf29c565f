"""`tunesmith jobs`: create, list, inspect, watch, stop and download fine-tuning jobs."""

import hashlib
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from tunesmith.cli.options import (
    JsonOption,
    KeyOption,
    UrlOption,
    connected,
    console,
    errors,
    print_json,
)
from tunesmith.client.events import follow_events
from tunesmith.client.http import APIError, Client

app = typer.Typer(help="Create, follow and manage fine-tuning jobs.", no_args_is_help=True)

JOBS = "/v1/fine_tuning/jobs"
# `jobs watch` exits with these: a script can branch on how the job ended.
EXIT_CODES = {"succeeded": 0, "failed": 1, "cancelled": 2}
JobArgument = Annotated[str, typer.Argument(help="The job's id (ftjob-...).")]


def _value(text: str) -> Any:
    """A --hyperparameter value: JSON where it parses (3, 1e-4, true, "auto"), else text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _pairs(items: list[str], option: str) -> dict[str, Any]:
    pairs: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint=option)
        pairs[key] = _value(value)
    return pairs


@app.command()
def create(
    model: Annotated[str | None, typer.Option(help="Base model (or an ft: model).")] = None,
    training_file: Annotated[str | None, typer.Option(help="File id of the training set.")]
    = None,
    validation_file: Annotated[str | None, typer.Option(help="File id of a validation set.")]
    = None,
    method: Annotated[str, typer.Option(help="Objective: supervised, dpo, ... "
                                        "(GET /v1/methods lists them).")] = "supervised",
    tuning: Annotated[str, typer.Option(help="lora, qlora, full, ... ")] = "lora",
    hyperparameter: Annotated[list[str] | None, typer.Option(
        "--hyperparameter", "-p", help="KEY=VALUE, repeatable (n_epochs=3, "
        "learning_rate=1e-4).")] = None,
    tuning_option: Annotated[list[str] | None, typer.Option(
        "--tuning-option", help="KEY=VALUE of the tuning, repeatable (r=16, alpha=32).")]
    = None,
    suffix: Annotated[str | None, typer.Option(help="Goes into the fine-tuned model's name.")]
    = None,
    spec: Annotated[Path | None, typer.Option(
        exists=True, dir_okay=False, help="A JSON job body; the options above override it.")]
    = None,
    idempotency_key: Annotated[str | None, typer.Option(
        help="Sent as Idempotency-Key: a retried create makes one job.")] = None,
    watch_it: Annotated[bool, typer.Option("--watch", help="Then watch it (as jobs watch).")]
    = False,
    url: UrlOption = None, api_key: KeyOption = None, as_json: JsonOption = False,
) -> None:
    """Create a fine-tuning job."""
    body: dict[str, Any] = json.loads(spec.read_text()) if spec else {}
    if model:
        body["model"] = model
    for field, value in (("training_file", training_file),
                         ("validation_file", validation_file), ("suffix", suffix)):
        if value:
            body[field] = value
    if not spec or method != "supervised" or hyperparameter:
        current = body.get("method", {})
        config = current.get(method, {}) if current.get("type") == method else {}
        hps = {**config.get("hyperparameters", {}),
               **_pairs(hyperparameter or [], "--hyperparameter")}
        body["method"] = {"type": method, method: {**config, "hyperparameters": hps}}
    if not spec or tuning != "lora" or tuning_option:
        current = body.get("tuning", {}) if body.get("tuning", {}).get("type") == tuning else {}
        body["tuning"] = {**current, "type": tuning,
                          **_pairs(tuning_option or [], "--tuning-option")}
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    with connected(url, api_key) as client:
        job = client.post(JOBS, json=body, headers=headers)
    if as_json:
        print_json(job)
    else:
        console.print(f"{job['id']}  {job['status']}  model {job['model']}")
    if watch_it:
        _watch(url, api_key, job["id"])


def _when(timestamp: int | None) -> str:
    if not timestamp:
        return ""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _progress_text(job: dict[str, Any]) -> str:
    progress = job.get("progress") or {}
    step, total = progress.get("step"), progress.get("total_steps")
    return f"{step}/{total}" if step is not None and total else ""


def _loss(metrics: dict[str, Any], *, summary: bool = True) -> float | None:
    """A step's training loss; with `summary`, else the run's mean (a finished job's last
    metrics are the trainer's end-of-training summary)."""
    keys = ("train_loss", "loss", "mean_train_loss") if summary else ("train_loss", "loss")
    loss = next((metrics[k] for k in keys if k in metrics), None)
    return loss if isinstance(loss, int | float) else None


@app.command("list")
def list_jobs(
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 20,
    status: Annotated[str | None, typer.Option(help="Only jobs in this status.")] = None,
    url: UrlOption = None, api_key: KeyOption = None, as_json: JsonOption = False,
) -> None:
    """List jobs, newest first."""
    params: dict[str, Any] = {"limit": min(limit, 100)}
    if status:
        params["status"] = status
    with connected(url, api_key) as client:
        jobs = client.list_all(JOBS, params, limit=limit)
    if as_json:
        print_json(jobs)
        return
    table = Table("id", "model", "status", "step", "loss", "created", "fine-tuned model")
    for job in jobs:
        loss = _loss(job.get("last_metrics") or {})
        table.add_row(job["id"], job["model"], job.get("status_detail") or job["status"],
                      _progress_text(job), f"{loss:.4f}" if loss is not None else "",
                      _when(job["created_at"]), job.get("fine_tuned_model") or "")
    console.print(table)


@app.command()
def get(job_id: JobArgument, url: UrlOption = None, api_key: KeyOption = None,
        as_json: JsonOption = False) -> None:
    """Show one job: status, progress, last metrics, error, result."""
    with connected(url, api_key) as client:
        job = client.get(f"{JOBS}/{job_id}")
    if as_json:
        print_json(job)
        return
    table = Table(show_header=False, box=None)
    rows = {
        "id": job["id"], "status": job.get("status_detail") or job["status"],
        "model": job["model"], "objective": (job.get("objective") or {}).get("type"),
        "tuning": (job.get("tuning") or {}).get("type"), "progress": _progress_text(job),
        "eta": f"{job['progress']['eta_seconds']:.0f} s"
        if (job.get("progress") or {}).get("eta_seconds") is not None else None,
        "last metrics": ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                  for k, v in (job.get("last_metrics") or {}).items()),
        "fine-tuned model": job.get("fine_tuned_model"),
        "error": f"{job['error'].get('code')}: {job['error'].get('message')}"
        if job.get("error") else None,
        "created": _when(job["created_at"]), "finished": _when(job.get("finished_at")),
    }
    for key, value in rows.items():
        if value:
            table.add_row(f"[bold]{key}[/bold]", str(value))
    console.print(table)


def _watch(url: str | None, api_key: str | None, job_id: str) -> None:
    with connected(url, api_key) as client:
        job = client.get(f"{JOBS}/{job_id}")
        progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                            TextColumn("step"), MofNCompleteColumn(),
                            TextColumn("loss {task.fields[loss]}"),
                            TextColumn("ETA"), TimeRemainingColumn(),
                            console=console)
        total = (job.get("progress") or {}).get("total_steps")
        with progress:
            task = progress.add_task(job_id, total=total, loss="-",
                                     completed=(job.get("progress") or {}).get("step") or 0)
            job = _follow(client, job, progress, task)
        status = job["status"]
        loss = progress.tasks[0].fields["loss"]  # the last step's, as the bar showed it
        where = f"step {_progress_text(job)}" + (f", loss {loss}" if loss != "-" else "")
        if status == "succeeded":
            console.print(f"[green]succeeded[/green] at {where}: {job.get('fine_tuned_model')}",
                          highlight=False)
        elif job.get("error"):
            errors.print(f"[red]{status}[/red]: {job['error'].get('code')}: "
                         f"{job['error'].get('message')}", highlight=False)
        else:
            errors.print(f"[red]{status}[/red]")
    raise typer.Exit(EXIT_CODES.get(status, 1))


def _follow(client: Client, job: dict[str, Any], progress: Progress,
            task: Any) -> dict[str, Any]:
    """Events into the bar (metrics) and lines above it (the rest), until the job ends; a
    pause ends the stream, so a paused job is waited on and its stream re-opened."""
    seen: set[str] = set()
    while True:
        for event in follow_events(client, job["id"]):
            if event["id"] in seen:  # a re-opened stream starts from the first event
                continue
            seen.add(event["id"])
            data = event.get("data") or {}
            if event.get("type") == "metrics":
                loss = _loss(data, summary=False)
                progress.update(task, completed=data.get("step", 0),
                                total=data.get("total_steps") or progress.tasks[0].total)
                if loss is not None:
                    progress.update(task, loss=f"{loss:.4f}")
                continue
            if data.get("total_steps"):
                progress.update(task, total=data["total_steps"], completed=data.get("step", 0))
            colour = {"warn": "yellow", "error": "red"}.get(event.get("level") or "", "dim")
            progress.console.print(f"[{colour}]{_when(event.get('created_at'))}[/{colour}] "
                                   f"{event['message']}", highlight=False)
        job = client.get(f"{JOBS}/{job['id']}")
        while job.get("status_detail") in ("paused", "pausing"):
            progress.update(task, description=f"{job['id']} (paused)")
            time.sleep(2)
            job = client.get(f"{JOBS}/{job['id']}")
        progress.update(task, description=job["id"])
        if job["status"] in EXIT_CODES:
            return job


@app.command()
def watch(job_id: JobArgument, url: UrlOption = None, api_key: KeyOption = None) -> None:
    """Follow a job live: a progress bar with step, loss and ETA, and its events.

    Exits 0 when it succeeds, 1 when it fails, 2 when it is cancelled."""
    _watch(url, api_key, job_id)


def _action(job_id: str, action: str, url: str | None, api_key: str | None,
            as_json: bool) -> None:
    with connected(url, api_key) as client:
        job = client.post(f"{JOBS}/{job_id}/{action}")
    if as_json:
        print_json(job)
    else:
        console.print(f"{job['id']}  {job.get('status_detail') or job['status']}")


@app.command()
def cancel(job_id: JobArgument, url: UrlOption = None, api_key: KeyOption = None,
           as_json: JsonOption = False) -> None:
    """Cancel a job (a running one checkpoints and stops within seconds)."""
    _action(job_id, "cancel", url, api_key, as_json)


@app.command()
def pause(job_id: JobArgument, url: UrlOption = None, api_key: KeyOption = None,
          as_json: JsonOption = False) -> None:
    """Pause a job: it saves a checkpoint and frees its worker."""
    _action(job_id, "pause", url, api_key, as_json)


@app.command()
def resume(job_id: JobArgument, url: UrlOption = None, api_key: KeyOption = None,
           as_json: JsonOption = False) -> None:
    """Resume a paused job from its checkpoint."""
    _action(job_id, "resume", url, api_key, as_json)


def _fetch(client: Client, artifact: dict[str, Any], target: Path, progress: Progress,
           task: Any) -> None:
    """One artifact to `target`, hashed as it streams; a mismatch leaves no file behind."""
    partial = target.with_name(target.name + ".part")
    digest = hashlib.sha256()
    with client.stream(artifact["url"]) as response, partial.open("wb") as out:
        for chunk in response.iter_bytes():
            out.write(chunk)
            digest.update(chunk)
            progress.advance(task, len(chunk))
    if digest.hexdigest() != artifact["sha256"]:
        partial.unlink()
        raise APIError(f"{artifact['name']}: sha256 {digest.hexdigest()} does not match the "
                       f"listed {artifact['sha256']}; nothing kept")
    partial.replace(target)


@app.command()
def download(
    job_id: JobArgument,
    output: Annotated[Path, typer.Option("--output", "-o", file_okay=False,
                                         help="Folder to download into.")] = Path("."),
    prefix: Annotated[str, typer.Option(help="Only artifacts under this folder "
                                        "(adapter/, model/, tensorboard/).")] = "",
    url: UrlOption = None, api_key: KeyOption = None,
) -> None:
    """Download a job's artifacts, checking each file's sha256."""
    with connected(url, api_key) as client:
        listed = client.get(f"{JOBS}/{job_id}/artifacts")["data"]
        chosen = [a for a in listed if a["name"].startswith(prefix)]
        if not chosen:
            raise APIError(f"job {job_id} has no artifacts" + (f" under {prefix!r}"
                                                                  if prefix else ""))
        root = (output / job_id).resolve()
        with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                      TransferSpeedColumn(), TimeRemainingColumn(), console=console) as progress:
            task = progress.add_task(f"{job_id}: {len(chosen)} files",
                                     total=sum(a["bytes"] for a in chosen))
            for artifact in chosen:
                target = (root / artifact["name"]).resolve()
                if not target.is_relative_to(root):  # a name must not climb out of the folder
                    raise APIError(f"refusing artifact name {artifact['name']!r}")
                target.parent.mkdir(parents=True, exist_ok=True)
                _fetch(client, artifact, target, progress, task)
    console.print(f"{len(chosen)} files, sha256 checked, in {root}")
