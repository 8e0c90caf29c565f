"""Liveness and readiness answers."""

from typing import Literal

from pydantic import BaseModel


class Liveness(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ok", "unavailable"]
    # "ok" or "error: <exception type>" for "database" and "broker"; "workers": "ok" or
    # what is missing (no live worker consumes the default queue).
    checks: dict[str, str]
