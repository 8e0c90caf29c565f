"""One error shape for every failure: `{"error": {"type", "code", "message", "param"}}`."""

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from api.schemas.errors import ErrorResponse

log = logging.getLogger(__name__)


class APIError(Exception):
    """An answer other than 200, in the one error shape. A subclass names its status, type
    and code in its class line: `class NotFound(APIError, status_code=404, ...)`."""

    status_code = 400
    type = "invalid_request_error"
    code = "invalid_request"

    def __init_subclass__(cls, *, status_code: int | None = None, type: str | None = None,
                          code: str | None = None) -> None:
        super().__init_subclass__()
        if status_code is not None:
            cls.status_code = status_code
        if type is not None:
            cls.type = type
        if code is not None:
            cls.code = code

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None,
                 details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers = headers
        self.details = details  # every problem, when there are several (e.g. bad lines)
        if code is not None:
            self.code = code


class InvalidRequest(APIError):
    pass


class Unauthorized(APIError, status_code=401, type="authentication_error",
                   code="invalid_api_key"):
    pass


class NotFound(APIError, status_code=404, type="not_found_error", code="not_found"):
    pass


class Conflict(APIError, status_code=409, type="conflict_error", code="conflict"):
    pass


class TooLarge(APIError, status_code=413, code="too_large"):
    pass


class RateLimited(APIError, status_code=429, type="rate_limit_error", code="rate_limited"):
    pass


_DESCRIPTIONS = {
    # OpenAI answers every invalid parameter 400 (its client raises BadRequestError); so do
    # we, for a body that misses the schema as for a value the server cannot use.
    400: "Bad input: a request that does not match the schema (every field at fault is "
         "listed), or a value the server cannot use (unknown file, bad JSONL line, ...)",
    401: "No API key, a malformed one, or a revoked one",
    404: "Not there, or not this project's",
    405: "Method not allowed",
    409: "The object is in the wrong state for this request",
    413: "Too large",
    429: "Too many requests or queued jobs; see Retry-After",
    503: "The database or the broker is not answering; retry after Retry-After",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error status codes, each with the one error shape."""
    return {code: {"model": ErrorResponse, "description": _DESCRIPTIONS[code]}
            for code in codes}


def error_body(type_: str, code: str, message: str,
               param: str | None) -> dict[str, dict[str, Any]]:
    return {"error": {"type": type_, "code": code, "message": message, "param": param}}


# Union member names pydantic puts in an error's location; not fields a user wrote.
_UNION_MEMBER = re.compile(r"^(constrained-\w+|literal\[.*\]|int|float|str|bool|list\[.*\]|"
                           r"function-\w+\[.*\]|tagged-union\[.*\])$")
_DISCRIMINATED = {"method", "tuning"}


def _loc_to_param(loc: tuple[object, ...]) -> str | None:
    """("body", "tuning", "lora", "r") -> "tuning.r"; ("body", "tasks", 0, "file") ->
    "tasks[0].file": the field as the user wrote it."""
    parts = [p for p in loc if p not in ("body", "query", "path", "header")]
    parts = [p for p in parts if not (isinstance(p, str) and _UNION_MEMBER.match(p))]
    if len(parts) > 1 and parts[0] in _DISCRIMINATED:
        del parts[1]  # the discriminator tag pydantic adds, e.g. "lora" in tuning.lora.r
    if len(parts) > 2 and parts[0] == "integrations" and isinstance(parts[1], int):
        del parts[2]  # the same in a list: "wandb" in integrations[0].wandb.wandb.project
    param = ""
    for part in parts:
        param += f"[{part}]" if isinstance(part, int) else (f".{part}" if param else str(part))
    return param or None


def _distinct_errors(errors: list[dict[str, Any]]) -> list[tuple[str | None, str]]:
    """One message per field: the `"auto"` alternative of a number adds only noise."""
    seen: dict[str | None, str] = {}
    for error in errors:
        param = _loc_to_param(tuple(error.get("loc", ())))
        if param not in seen or error.get("type") != "literal_error":
            if param in seen and error.get("type") == "literal_error":
                continue
            seen.setdefault(param, error.get("msg", "invalid"))
    return list(seen.items())


def _allowed_methods(request: Request) -> str:
    """Every method some route serves at this path. Starlette's own 405 names only the
    first route whose path matched (GET /v1/files/{id}, not DELETE on the same path)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match != Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return ", ".join(sorted(methods))


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        body = error_body(exc.type, exc.code, exc.message, exc.param)
        if exc.details is not None:
            body["error"]["details"] = exc.details
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = _distinct_errors(list(exc.errors()))
        param, message = problems[0]
        if param:
            message = f"{param}: {message}"
        if len(problems) > 1:
            message += f" (and {len(problems) - 1} more: " + "; ".join(
                f"{p}: {m}" for p, m in problems[1:4]) + ")"
        body = error_body("invalid_request_error", "invalid_spec", message, param)
        body["error"]["details"] = [{"param": p, "message": m} for p, m in problems]
        return JSONResponse(body, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = _allowed_methods(request)
        return JSONResponse(error_body("invalid_request_error", code, str(exc.detail), None),
                            status_code=exc.status_code, headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return JSONResponse(error_body("server_error", "internal", "Internal error; the server "
                                       "log has the details.", None), status_code=500)

    @app.exception_handler(DBAPIError)
    async def _database_error(request: Request, exc: DBAPIError) -> JSONResponse:
        if isinstance(exc, DataError):
            # A value the database cannot hold or compare, e.g. a NUL character in an id
            # or cursor (PostgreSQL text refuses it): the request's fault, not a crash.
            return JSONResponse(
                error_body("invalid_request_error", "invalid_value", "A value in the request "
                           "cannot be used (NUL characters, or a value too long).", None),
                status_code=400)
        # The database restarting or failing over is not the client's fault and passes:
        # 503 with Retry-After, which HTTP clients (openai's included) retry on.
        if isinstance(exc, OperationalError) or exc.connection_invalidated:
            log.warning("database unavailable: %s", type(exc.orig).__name__)
            return JSONResponse(
                error_body("server_error", "database_unavailable", "The database is not "
                           "answering; retry in a few seconds.", None),
                status_code=503, headers={"Retry-After": "5"})
        return await _unexpected(request, exc)
