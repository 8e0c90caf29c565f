"""Training workers: the Celery supervisor task and the training child it starts."""

from worker.hub_kernels import apply_hub_kernels_setting

# Before any module of this package imports transformers: see worker/hub_kernels.py.
apply_hub_kernels_setting()
