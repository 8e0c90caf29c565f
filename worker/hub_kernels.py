"""Hub kernels stay off unless the operator turns them on (`TUNESMITH_HUB_KERNELS=true`).

transformers 5 kernelizes every model it loads unless `USE_HUB_KERNELS` says no: on CUDA,
loading a Llama fetches `kernels-community/rotary` from the hub. With no network the load
fails ("not available in the local cache"), without the `kernels` package it fails too, and
with a network it runs code from the hub although trust_remote_code is off (FACTS.md, GPU).

transformers reads the variable at every load, and child processes inherit it, so setting it
once when a process first imports `worker` (the Celery worker, the fork server, every training
process and data-parallel rank, the tiny-model builder) covers every model load. `load_model`
also passes `use_kernels=False`, which says the same to `from_pretrained` itself.
"""

import os

from tunesmith.settings import settings

ENV_VAR = "USE_HUB_KERNELS"


def apply_hub_kernels_setting() -> bool:
    """Set `USE_HUB_KERNELS` from the setting (overriding what the image bakes in); returns
    whether hub kernels are allowed."""
    os.environ[ENV_VAR] = "YES" if settings.hub_kernels else "NO"
    return settings.hub_kernels


def hub_kernels_on() -> bool:
    return settings.hub_kernels
