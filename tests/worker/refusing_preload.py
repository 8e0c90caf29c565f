"""A fork-server preload that refuses to serve, as worker/warm_imports.py does when an import
initialised CUDA (tests/worker/test_fork_server_cuda.py)."""

raise RuntimeError("CUDA was initialised while the fork server imported the training libraries")
