"""What the fork server imports once, so every forked training process starts with it.

Nothing here may touch a GPU or open a database connection: both would be shared, broken,
by every fork.
"""

import importlib
import os
import signal

# The fork server lives exactly as long as its worker process (it exits when that process
# does). A SIGTERM to the worker's process group must not end it first: its forked
# training processes die with it (PR_SET_PDEATHSIG) and would lose the checkpoint the
# supervisor asks them to write. Forked children set their own SIGTERM handler.
signal.signal(signal.SIGTERM, signal.SIG_IGN)

# Probe CUDA through NVML, which stays fork-safe, if anything asks torch about devices.
os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")

for module in ("torch", "transformers", "peft", "trl", "datasets"):
    importlib.import_module(module)
importlib.import_module("worker.registry").load_all()  # every objective and tuning module
