"""The job spec: what the service accepts, declared once for the API and the workers (no torch)."""
