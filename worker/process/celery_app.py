"""The worker's Celery app: the API's app plus the tasks (`celery -A worker.process.celery_app`)."""

from tunesmith.queue import celery_app

app = celery_app()

import worker.process.tasks  # noqa: E402,F401  (registers the tasks on the app)
