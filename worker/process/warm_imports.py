"""What the fork server imports once, so every forked training process starts with it.

Nothing here may touch a GPU or open a database connection: both would be shared, broken,
by every fork. CUDA in particular cannot be used in a child forked after the parent
initialised it, so this module leaves `torch.cuda.is_initialized()` false, and refuses to
serve (the server exits, the launcher falls back to a fresh interpreter per job) if an
import initialised it anyway.
"""

import ctypes
import importlib
import os
import signal
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

# The fork server lives exactly as long as its worker process (it exits when that process
# does). A SIGTERM to the worker's process group must not end it first: its forked
# training processes die with it (PR_SET_PDEATHSIG) and would lose the checkpoint the
# supervisor asks them to write. Forked children set their own SIGTERM handler.
signal.signal(signal.SIGTERM, signal.SIG_IGN)

# torch.cuda.is_available() and device_count() then ask NVML, which needs no CUDA context.
os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")

import torch  # noqa: E402  (after the variable above)


def _nvml_capability() -> Callable[..., tuple[int, int]] | None:
    """torch.cuda.get_device_capability answered by NVML, or None where NVML is missing."""
    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
        if nvml.nvmlInit_v2() != 0:
            return None
    except OSError:
        return None

    def capability(device: Any = None) -> tuple[int, int]:
        index = (0 if device is None else device.idx if isinstance(device, torch.cuda.device)
                 else device if isinstance(device, int) else torch.device(device).index or 0)
        handle = ctypes.c_void_p()
        major, minor = ctypes.c_int(), ctypes.c_int()
        if nvml.nvmlDeviceGetHandleByIndex_v2(index, ctypes.byref(handle)) != 0 or \
                nvml.nvmlDeviceGetCudaComputeCapability(handle, ctypes.byref(major),
                                                        ctypes.byref(minor)) != 0:
            raise RuntimeError(f"NVML could not read the capability of GPU {index}")
        return major.value, minor.value

    return capability


@contextmanager
def _cuda_kept_uninitialised(callers: list[str]) -> Iterator[None]:
    """bitsandbytes, imported by peft, reads every GPU's compute capability at import to pick
    its CUDA library; torch answers that by initialising CUDA. Answer it from NVML instead
    while the libraries import, and note whoever else asks torch to initialise CUDA."""
    saved_capability, saved_init = torch.cuda.get_device_capability, torch.cuda._lazy_init
    capability = _nvml_capability() if torch.cuda.is_available() else None
    if capability is not None:
        torch.cuda.get_device_capability = capability  # type: ignore[assignment]

    def noted_init() -> None:
        if not torch.cuda.is_initialized():
            callers.append("".join(traceback.format_stack(limit=8)[:-1]))
        saved_init()

    torch.cuda._lazy_init = noted_init  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.cuda.get_device_capability = saved_capability  # type: ignore[assignment]
        torch.cuda._lazy_init = saved_init  # type: ignore[assignment]


cuda_init_callers: list[str] = []
with _cuda_kept_uninitialised(cuda_init_callers):
    for module in ("transformers", "peft", "trl", "datasets"):
        importlib.import_module(module)
    importlib.import_module("worker.registry").load_all()  # every objective and tuning module

if torch.cuda.is_initialized():
    # Not ImportError: multiprocessing's fork server ignores that one and would serve.
    raise RuntimeError("CUDA was initialised while the fork server imported the training "
                       "libraries; forked jobs could not use the GPU. Initialised by:\n"
                       + "\n".join(cuda_init_callers))
