"""Tunesmith: a self-hosted fine-tuning service (shared code of the API and the workers)."""
