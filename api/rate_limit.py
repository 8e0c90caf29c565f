"""Requests per API key per second: a token bucket per key, answered with 429 and Retry-After.

A header that is no 'Bearer <key>' is not limited here: it is answered 401 without work.

Buckets live in this API process. With several API replicas each allows the rate, so set
the limit per replica; a shared (Redis) bucket is the step after that.
"""

import math
import threading
import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from api.deps import bearer_secret
from api.errors import error_body
from tunesmith.keys import hash_key
from tunesmith.settings import settings


class TokenBuckets:
    def __init__(self, rate: float, burst: int, max_keys: int = 100_000) -> None:
        self.rate, self.burst, self.max_keys = rate, burst, max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill)
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """Take one token; 0.0 if allowed, else the seconds until a token is back."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens >= 1:
                if len(self._buckets) >= self.max_keys and key not in self._buckets:
                    self._buckets.clear()  # bounded memory under a flood of random keys
                self._buckets[key] = (tokens - 1, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / self.rate


def install_rate_limit(app: FastAPI) -> None:
    if settings.rate_limit_per_second <= 0:
        return
    buckets = TokenBuckets(settings.rate_limit_per_second, settings.rate_limit_burst)

    @app.middleware("http")
    async def rate_limit(request: Request,
                         call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        secret = bearer_secret(request.headers.get("authorization") or "")
        if secret and request.url.path.startswith("/v1/"):
            # The key as authentication reads it (hash_key is the stored hash of a key):
            # whatever the header's spelling, one key is one bucket.
            wait = buckets.take(hash_key(secret))
            if wait > 0:
                return JSONResponse(
                    error_body("rate_limit_error", "rate_limited",
                               f"Too many requests for this API key (limit "
                               f"{settings.rate_limit_per_second:g}/s, burst "
                               f"{settings.rate_limit_burst}); retry after {wait:.1f}s.", None),
                    status_code=429, headers={"Retry-After": str(math.ceil(wait))})
        return await call_next(request)
