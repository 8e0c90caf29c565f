"""The one error shape of every route: `{"error": {"type", "code", "message", "param"}}`."""

from typing import Any

from pydantic import BaseModel


class ErrorDetail(BaseModel):
    type: str
    code: str
    message: str
    param: str | None
    # Validation errors list every field at fault; a bad upload, its bad lines.
    details: list[dict[str, Any]] | None = None


class ErrorResponse(BaseModel):
    """The one error shape of every route."""

    error: ErrorDetail
