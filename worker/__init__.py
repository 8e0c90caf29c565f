"""Training workers: the Celery supervisor task and the training child it starts."""

from worker.process.hub_access import apply_hub_settings

# Before any module of this package imports transformers: see worker/process/hub_access.py.
apply_hub_settings()
