"""The REST API (FastAPI). It never imports torch or the worker: it sends jobs by task name."""
