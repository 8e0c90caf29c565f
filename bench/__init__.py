"""Benchmarks of the service: overhead, API under load, queue, GPU training speed per tuning.

Run them all with `python -m bench` (see bench/README.md).
"""
