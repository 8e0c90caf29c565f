"""What a worker's processes may fetch from the Hugging Face hub: set in the environment once,
when a process first imports `worker` (the Celery worker, the fork server, every training
process and data-parallel rank, the tiny-model builder), so every model load and every child
process sees it.

Hub kernels stay off unless the operator turns them on (`TUNESMITH_HUB_KERNELS=true`).
transformers 5 kernelizes every model it loads unless `USE_HUB_KERNELS` says no: on CUDA,
loading a Llama fetches `kernels-community/rotary`. With no network the load fails ("not
available in the local cache"), without the `kernels` package it fails too, and with a
network it runs code from the hub although trust_remote_code is off (FACTS.md, GPU).
transformers reads the variable at every load; `load_model` also passes `use_kernels=False`.

Where hub downloads are not allowed, `HF_HUB_OFFLINE=1` too: huggingface_hub then fails at
once instead of waiting on a network that is not there (read when it is imported, hence here).
"""

import os

from tunesmith.settings import settings


def apply_hub_settings() -> None:
    # Overrides a USE_HUB_KERNELS=NO baked into an image when the operator turns them on.
    os.environ["USE_HUB_KERNELS"] = "YES" if settings.hub_kernels else "NO"
    if not settings.allow_hub_downloads:
        os.environ["HF_HUB_OFFLINE"] = "1"


def hub_kernels_on() -> bool:
    return settings.hub_kernels
