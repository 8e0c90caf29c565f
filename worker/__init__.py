"""Training workers: the Celery supervisor task and the training child it starts."""
