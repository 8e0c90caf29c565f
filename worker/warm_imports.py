"""What the fork server imports once, so every forked training process starts with it.

Nothing here may touch a GPU or open a database connection: both would be shared, broken,
by every fork.
"""

import os

# Probe CUDA through NVML, which stays fork-safe, if anything asks torch about devices.
os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")

import datasets  # noqa: F401
import peft  # noqa: F401
import torch  # noqa: F401
import transformers  # noqa: F401
import trl  # noqa: F401

from worker import registry

registry.load_all()
