"""A fork-server preload that refuses to serve, as worker/process/warm_imports.py does when an
import initialised CUDA (tests/e2e/test_fork_server_cuda.py)."""

raise RuntimeError("CUDA was initialised while the fork server imported the training libraries")
