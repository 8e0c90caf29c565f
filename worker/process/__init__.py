"""The worker process's side: the Celery app and tasks, the supervisor, how a training process is
started, and recovery around it.
"""
