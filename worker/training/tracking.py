"""A job's `integrations` as the trainers' own reporting (`report_to`).

transformers' W&B, MLflow and TensorBoard callbacks do the logging; this module only names
the run and where it goes. They read their settings from the environment, so the job's
names are set there, in the training child (one process per job: nothing leaks into the
next job). Credentials and servers (WANDB_API_KEY, WANDB_MODE, MLFLOW_TRACKING_URI, ...)
are the operator's, already in the worker's environment; nothing here logs them."""

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

from worker.training.artifacts import register_artifacts
from worker.training.context import JobContext
from worker.training.failures import TrackingUnavailable

TENSORBOARD_FOLDER = "tensorboard"


def _require(module: str, integration: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise TrackingUnavailable(
            f"integrations: this worker cannot report to {integration}: the '{module}' package "
            "is not installed (the operator installs tunesmith[tracking])")


def tensorboard_dir(ctx: JobContext) -> Path:
    """Inside the artifacts folder, so the event files are published with the results."""
    folder = ctx.artifacts_dir / TENSORBOARD_FOLDER
    return folder / ctx.stage if ctx.stage else folder


def _start_wandb_run(ctx: JobContext, settings: Any, run_id: str) -> None:
    """The W&B run, started here so it carries the job's names (transformers' callback
    reuses a started run; it would otherwise name it after `run_name`, which MLflow has).
    Its id is the job's: a paused job resumes the same run rather than starting another."""
    import wandb

    wandb.init(project=settings.project, entity=settings.entity,
               name=settings.name or run_id, tags=settings.tags, id=run_id, resume="allow",
               # Offline runs land beside the job unless the operator chose a folder.
               dir=os.environ.get("WANDB_DIR") or str(ctx.job_dir))


def _check(integration: Any) -> None:
    """Raise TrackingUnavailable if this worker cannot serve the integration."""
    if integration.type == "wandb":
        _require("wandb", "W&B")
        if not os.environ.get("WANDB_API_KEY") and os.environ.get("WANDB_MODE") not in (
                "offline", "dryrun", "disabled"):
            raise TrackingUnavailable(
                "integrations: this worker cannot report to W&B: the operator has set "
                "neither WANDB_API_KEY nor WANDB_MODE=offline in the worker's environment")
    elif integration.type == "mlflow":
        _require("mlflow", "MLflow")
        if not os.environ.get("MLFLOW_TRACKING_URI"):
            raise TrackingUnavailable(
                "integrations: this worker cannot report to MLflow: the operator has not "
                "set MLFLOW_TRACKING_URI in the worker's environment")
    elif integration.type == "tensorboard":
        _require("tensorboard", "TensorBoard")


def report_to(ctx: JobContext) -> tuple[list[str], dict[str, Any]]:
    """The trainer's `report_to` list and extra arguments (run name) for this job; sets the
    callbacks' environment. Raises TrackingUnavailable before any run is started."""
    integrations = ctx.spec.integrations or []
    for integration in integrations:
        _check(integration)
    if not integrations:
        return [], {}
    run_name = f"{ctx.job_id}-{ctx.stage}" if ctx.stage else ctx.job_id
    targets: list[str] = []
    for integration in integrations:
        if integration.type == "wandb" and ctx.is_main:
            _start_wandb_run(ctx, integration.wandb, run_id=run_name)
        elif integration.type == "mlflow":
            m = integration.mlflow
            os.environ["MLFLOW_EXPERIMENT_NAME"] = m.experiment_name
            os.environ["MLFLOW_TAGS"] = json.dumps({"tunesmith.job_id": ctx.job_id})
            run_name = m.run_name or run_name
        elif integration.type == "tensorboard":
            os.environ["TENSORBOARD_LOGGING_DIR"] = str(tensorboard_dir(ctx))
        targets.append(integration.type)
    return targets, {"run_name": run_name}


def finish(ctx: JobContext) -> None:
    """After training (or a pause): close the runs and publish the TensorBoard log."""
    if not ctx.is_main or not ctx.spec.integrations:
        return
    types = {integration.type for integration in ctx.spec.integrations}
    if "wandb" in types:
        import wandb

        if wandb.run is not None:
            wandb.finish()  # flushes an offline run's files before the child exits
    if "mlflow" in types:
        import mlflow

        if mlflow.active_run() is not None:
            mlflow.end_run()
    folder = tensorboard_dir(ctx)
    if "tensorboard" in types and folder.is_dir():
        names = register_artifacts(ctx, folder, "tensorboard")
        ctx.event(f"TensorBoard log published as artifacts/{folder.relative_to(ctx.artifacts_dir)}"
                  f" ({len(names)} files)",
                  data={"artifact": str(folder.relative_to(ctx.artifacts_dir)),
                        "kind": "tensorboard", "files": names})
