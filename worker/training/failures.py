"""Turn what went wrong in training into an error a program can branch on and a person can fix.

Codes: invalid_data, out_of_memory, diverged, model_not_found, cuda_unavailable,
integration_unavailable, timeout, worker_lost, internal.
"""

from dataclasses import asdict, dataclass
from typing import Any

from tunesmith.model_names import BadModelName, ModelNotFound


@dataclass(frozen=True)
class JobError:
    code: str
    message: str
    param: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class InvalidData(ValueError):
    """Data that passed upload checks but cannot train this job (e.g. every row too long)."""

    def __init__(self, message: str, param: str | None = "training_file") -> None:
        super().__init__(message)
        self.param = param


class CudaUnavailable(RuntimeError):
    pass


class TrackingUnavailable(RuntimeError):
    """The worker cannot serve an integration the job asked for (library or server missing)."""


def is_out_of_memory(exc: BaseException) -> bool:
    return "out of memory" in str(exc).lower() or type(exc).__name__ == "OutOfMemoryError"


def classify(exc: BaseException, *, hyperparameters: dict[str, Any] | None = None) -> JobError:
    text = f"{type(exc).__name__}: {exc}"
    hp = hyperparameters or {}
    if isinstance(exc, InvalidData):
        return JobError("invalid_data", str(exc), exc.param)
    if type(exc).__name__ == "Diverged":  # worker.training.divergence imports transformers: by name
        return JobError("diverged", str(exc), "method.hyperparameters.learning_rate")
    if isinstance(exc, TrackingUnavailable):
        return JobError("integration_unavailable", str(exc), "integrations")
    if isinstance(exc, CudaUnavailable):
        return JobError("cuda_unavailable", str(exc), "resources.gpus")
    if isinstance(exc, ModelNotFound | BadModelName) or (
            isinstance(exc, OSError) and ("not a valid model identifier" in str(exc)
                                          or "does not appear to have" in str(exc))):
        return JobError("model_not_found", str(exc), "model")
    if is_out_of_memory(exc):
        estimate = hp.get("estimated_peak_memory_gib")
        return JobError(
            "out_of_memory",
            f"Out of memory at batch_size={hp.get('batch_size', '?')} (micro-batch "
            f"{hp.get('micro_batch_size', '?')}), max_seq_length={hp.get('max_seq_length', '?')}"
            f", gradient_checkpointing={hp.get('gradient_checkpointing', '?')}"
            + (f"; estimated peak {estimate} GiB" if estimate is not None else "")
            + ". Lower max_seq_length, use tuning.type 'qlora' (or 'lora' instead of 'full'), "
            "or a device with more memory; a smaller batch_size also helps.",
            "method.hyperparameters.batch_size",
        )
    return JobError("internal", f"Training failed: {text[:2000]}")
