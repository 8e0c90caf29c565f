"""Public ids: a type prefix, then a millisecond clock and randomness, so ids sort by creation."""

import secrets
import time


def new_id(prefix: str) -> str:
    return f"{prefix}-{int(time.time() * 1000):012x}{secrets.token_hex(6)}"
