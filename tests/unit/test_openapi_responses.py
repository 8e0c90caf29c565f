"""Every operation of the OpenAPI schema documents what it answers: a 2xx response whose
JSON body is a named model (a `$ref`, or a union of them), or a declared non-JSON media
type with a schema (downloads, server-sent events). Built from the app itself: no servers.
"""

from typing import Any

import pytest
from fastapi import APIRouter, FastAPI

from api.main import create_app

HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}


def _named(schema: dict[str, Any]) -> bool:
    """A reference to a component, or a union of references."""
    if "$ref" in schema:
        return True
    members = schema.get("anyOf") or schema.get("oneOf") or []
    return bool(members) and all(_named(member) for member in members)


def undocumented(schema: dict[str, Any]) -> list[str]:
    """`METHOD path: why` for each operation whose success answer has no schema."""
    found = []
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            if method not in HTTP_METHODS:
                continue
            where = f"{method.upper()} {path}"
            successes = {code: response for code, response in operation["responses"].items()
                         if code.startswith("2")}
            if not successes:
                found.append(f"{where}: no 2xx response")
                continue
            for code, response in successes.items():
                content = response.get("content") or {}
                if not content:
                    found.append(f"{where}: {code} has no content")
                for media_type, body in content.items():
                    body_schema = body.get("schema") or {}
                    if media_type == "application/json" and not _named(body_schema):
                        found.append(f"{where}: {code} JSON body is not a model "
                                     f"({body_schema})")
                    elif media_type != "application/json" and "type" not in body_schema:
                        found.append(f"{where}: {code} {media_type} has no schema")
    return found


def test_every_operation_documents_its_answer() -> None:
    schema = create_app().openapi()
    operations = sum(1 for ops in schema["paths"].values() for m in ops if m in HTTP_METHODS)
    assert operations >= 38  # every route is walked, not an empty schema
    assert undocumented(schema) == []


def test_streams_and_downloads_declare_their_media_types() -> None:
    paths = create_app().openapi()["paths"]

    def media(path: str, method: str = "get") -> set[str]:
        return set(paths[path][method]["responses"]["200"]["content"])

    assert media("/v1/fine_tuning/jobs/{job_id}/events") == {"application/json",
                                                               "text/event-stream"}
    assert media("/v1/chat/completions", "post") == {"application/json", "text/event-stream"}
    assert media("/v1/files/{file_id}/content") == {"application/jsonl", "text/csv"}
    assert media("/v1/fine_tuning/jobs/{job_id}/checkpoints/{checkpoint_id}.tar.gz") == {
        "application/gzip"}
    assert media("/v1/exports/{export_id}/artifacts/{name}") == {"application/octet-stream",
                                                                  "application/gzip"}


def test_errors_are_documented_with_the_error_model() -> None:
    paths = create_app().openapi()["paths"]
    responses = paths["/v1/fine_tuning/jobs/{job_id}/cancel"]["post"]["responses"]
    for code in ("400", "401", "404", "409", "429", "503"):
        assert responses[code]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorResponse"}, code


@pytest.mark.parametrize("route", ["dict", "untyped stream"])
def test_the_walk_finds_an_undocumented_route(route: str) -> None:
    """The check can fail: a route answering a bare dict, or a stream with no media type."""
    app: FastAPI = create_app()
    router = APIRouter()
    if route == "dict":
        @router.get("/v1/bare")
        def bare() -> dict[str, Any]:
            return {}
    else:
        @router.get("/v1/bare", response_model=None, responses={
            200: {"content": {"text/event-stream": {}}}})
        def bare_stream() -> None:
            return None
    app.include_router(router)
    app.openapi_schema = None
    found = undocumented(app.openapi())
    assert found and {line.split(":")[0] for line in found} == {"GET /v1/bare"}
