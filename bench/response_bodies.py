"""What writing a page of jobs costs through its response model, against what FastAPI did
before the routes declared one (jsonable_encoder over the plain dict), in one run:

    python -m bench.response_bodies [--jobs 100] [--repeats 30]

In-process, no stack: the body of `GET /v1/fine_tuning/jobs?limit=N`, built from jobs in
memory; the figure is the median time of each way and their ratio.
"""

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from fastapi.encoders import jsonable_encoder

from api.schemas.jobs import JobList
from api.serializers import job_object, list_object
from tunesmith.db.models import Job
from tunesmith.spec.job import JobSpec

SPEC = JobSpec.model_validate({
    "model": "tiny", "training_file": "file-a", "metadata": {"team": "x"},
    "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}},
    "integrations": [{"type": "wandb", "wandb": {"project": "p"}}]})


def _job(index: int) -> Job:
    return Job(id=f"ftjob-{index:024x}", project_id="proj-1", model="tiny",
               training_file_id="file-a", validation_file_id=None, method_type="supervised",
               tuning_type="lora", spec=SPEC.model_dump(mode="json"), status="running",
               suffix=None, seed=42, metadata_={"team": "x"}, max_attempts=3, attempt=0,
               created_at=1700000000 + index, started_at=1700000100, finished_at=None,
               fine_tuned_model=None, result_files=[], trained_tokens=None, error=None,
               hyperparameters={"n_epochs": 2, "batch_size": 4,
                                "learning_rate_multiplier": 2},
               progress={"step": 5, "total_steps": 20, "steps_per_second": 0.5},
               last_metrics={"train_loss": 1.25, "step": 5})


def _median_seconds(work: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    body = list_object([job_object(_job(i)) for i in range(args.jobs)], has_more=False)
    before = _median_seconds(lambda: jsonable_encoder(body), args.repeats)
    now = _median_seconds(lambda: JobList.model_validate(body).model_dump(
        mode="json", by_alias=True, exclude_unset=True), args.repeats)
    print(f"a page of {args.jobs} jobs, median of {args.repeats}:")
    print(f"  jsonable_encoder over the dict (before): {before * 1000:.2f} ms")
    print(f"  through JobList (now):                   {now * 1000:.2f} ms")
    print(f"  ratio now/before:                        {now / before:.2f}")


if __name__ == "__main__":
    main()
