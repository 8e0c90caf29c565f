"""The CLI's HTTP client for a running Tunesmith service: httpx only, no server code."""
