"""`GET /v1/files/{id}/preview`: a file's first rows and how many tokens each holds.

Token counts come from the model folder's `tokenizer.json`, read by `tokenizers` (Rust, no
torch, so the API stays light). A row's count is the count of all its text (every string in
it but message roles, joined by newlines): what a user weighs against `max_seq_length`, not
the exact count after the chat template, which only the worker applies.
"""

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query
from tokenizers import Tokenizer

from api.deps import CurrentProject, SessionDep
from api.errors import InvalidRequest, NotFound, error_responses
from api.routes.files import _get_file
from api.schemas.files import FilePreview
from tunesmith import storage
from tunesmith.json_input import JSONInputError, read_rows
from tunesmith.model_names import BadModelName, ModelNotFound, resolve_model
from tunesmith.settings import settings

router = APIRouter(prefix="/v1/files", tags=["files"])


@lru_cache(maxsize=8)
def _tokenizer(path: str, mtime: float) -> Tokenizer:
    # Keyed on the file's mtime too: a model folder rebuilt in place is read again.
    return Tokenizer.from_file(path)


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        # A message's role is the chat template's business, not text of the row.
        return [text for key, item in value.items() if key != "role" for text in _texts(item)]
    if isinstance(value, list):
        return [text for item in value for text in _texts(item)]
    return []


def _model_tokenizer(model: str) -> Tokenizer:
    try:
        location = resolve_model(model)
    except (BadModelName, ModelNotFound) as exc:
        raise InvalidRequest(str(exc), param="model", code="model_not_found") from None
    path = Path(location.path_or_id) / "tokenizer.json"
    if location.source != "local" or not path.is_file():
        raise InvalidRequest(f"Model '{model}' has no tokenizer.json in the models root to "
                             "count tokens with; leave `model` out to count characters.",
                             param="model", code="no_tokenizer")
    return _tokenizer(str(path), path.stat().st_mtime)


@router.get("/{file_id}/preview", response_model=FilePreview, responses=error_responses(404))
def preview_file(
    session: SessionDep, project: CurrentProject, file_id: str,
    model: str | None = None, limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> dict[str, Any]:
    """The first `limit` rows with their line numbers, characters and (with `model`) tokens."""
    file = _get_file(session, project, file_id)
    if file.format == "csv":
        raise InvalidRequest(f"File '{file_id}' is a results CSV, not JSONL rows.",
                             param="file_id")
    tokenizer = _model_tokenizer(model) if model else None
    rows: list[dict[str, Any]] = []
    try:
        for number, row in read_rows(storage.file_path(file.id),
                                     max_line_bytes=settings.max_line_bytes):
            text = "\n".join(_texts(row))
            tokens = len(tokenizer.encode(text, add_special_tokens=False).ids) \
                if tokenizer else None
            rows.append({"line": number, "row": row, "characters": len(text),
                         "tokens": tokens})
            if len(rows) == limit:
                break
    except (JSONInputError, FileNotFoundError) as exc:  # the upload check passed it; gone?
        raise NotFound(f"File '{file_id}' cannot be read: {exc}", param="file_id") from None
    return {"object": "file.preview", "file_id": file.id, "model": model,
            "rows": file.row_count, "data": rows}
