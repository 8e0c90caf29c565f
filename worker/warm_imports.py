"""What the fork server imports once, so every forked training process starts with it.

Nothing here may touch a GPU or open a database connection: both would be shared, broken,
by every fork.
"""

import os

# Probe CUDA through NVML, which stays fork-safe, if anything asks torch about devices.
os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")

import datasets  # noqa: E402,F401
import peft  # noqa: E402,F401
import torch  # noqa: E402,F401
import transformers  # noqa: E402,F401
import trl  # noqa: E402,F401

from worker import registry  # noqa: E402

registry.load_all()
