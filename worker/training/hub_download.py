"""Hub models: fetched once per job into the worker's hub cache, with progress in the job's
events, a token for gated models from the worker's environment, and a fast, named failure.

The token is huggingface_hub's own: `HF_TOKEN`, or the file `HF_TOKEN_PATH` names. It is read
by the library where it is needed and never passed to anything that stores or logs: not the
job, its events, its error or the worker's log.

Without this step `from_pretrained` reached the hub itself, and a hub it could not reach ended
the job as `internal` after ~47 s of retries. `snapshot_download` fails at once when the hub
is unreachable and nothing is cached, and says why; that becomes `model_not_found` naming
the model.
"""

import os
import time
from collections.abc import Callable
from typing import Any

from tqdm.auto import tqdm

from tunesmith.model_names import ModelNotFound

# One event per bar at most this often, and one when a bar completes.
PROGRESS_EVERY_SECONDS = 5.0


def progress_bar_class(report: Callable[[str, dict[str, Any]], None],
                       model: str) -> type[tqdm]:
    """A tqdm class whose bars report to the job's events instead of a terminal."""

    class EventProgress(tqdm):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.pop("name", None)
            kwargs["disable"] = False
            kwargs["file"] = open(os.devnull, "w")  # noqa: SIM115 (closed with the bar)
            super().__init__(*args, **kwargs)
            self._reported_at = 0.0

        def update(self, n: float | None = 1) -> bool | None:
            shown = super().update(n)
            now = time.monotonic()
            finished = bool(self.total) and self.n >= self.total
            if self.n and (finished or now - self._reported_at >= PROGRESS_EVERY_SECONDS):
                self._reported_at = now
                unit = "bytes" if self.unit == "B" else "files"
                total = f" of {int(self.total)}" if self.total else ""
                report(f"Downloading {model} from the hub: {int(self.n)}{total} {unit}",
                       {"model": model, "unit": unit, "done": int(self.n),
                        "total": int(self.total) if self.total else None})
            return shown

        def close(self) -> None:
            super().close()
            if self.fp is not None and not self.fp.closed:
                self.fp.close()

    return EventProgress


def download(model: str, report: Callable[[str, dict[str, Any]], None]) -> str:
    """The local folder of hub model `model`, downloaded (or found cached)."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return snapshot_download(model, tqdm_class=progress_bar_class(report, model),
                                 # Weights in safetensors only: never pickle (DESIGN §5).
                                 ignore_patterns=["*.bin", "*.pt", "*.pth", "*.ckpt",
                                                  "*.h5", "*.msgpack", "*.onnx"])
    except GatedRepoError:
        raise ModelNotFound(
            f"Model '{model}' is gated on the Hugging Face hub: accept its terms there and "
            "give the workers a token with access (HF_TOKEN or HF_TOKEN_PATH in the "
            "worker's environment).") from None
    except RepositoryNotFoundError:
        raise ModelNotFound(
            f"Model '{model}' is not on the Hugging Face hub at {constants.ENDPOINT} (or is "
            "private: give the workers a token with access, HF_TOKEN).") from None
    except RevisionNotFoundError:
        raise ModelNotFound(f"Model '{model}': revision not found on the hub.") from None
    except LocalEntryNotFoundError as exc:
        cause = exc.__cause__ or exc.__context__
        why = f"{type(cause).__name__}: {cause}" if cause else "offline"
        raise ModelNotFound(
            f"Model '{model}' could not be fetched: the Hugging Face hub at "
            f"{constants.ENDPOINT} is unreachable ({why[:300]}) and no copy is cached on "
            "this worker.") from None
    except HfHubHTTPError as exc:
        raise ModelNotFound(f"Model '{model}' could not be fetched from the Hugging Face hub: "
                            f"HTTP {exc.response.status_code if exc.response is not None else '?'}"
                            ) from None
