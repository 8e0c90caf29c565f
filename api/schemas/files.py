"""`/v1/files`: OpenAI's file object plus what validation found, and a file's preview."""

from typing import Any, Literal

from pydantic import BaseModel, Field

from api.schemas.lists import ListPage


class FileObject(BaseModel):
    """OpenAI's file. No `expires_at` or `status_details`: our files never expire and carry
    no status details, and OpenAI's schema types both as integer and string, never null."""

    id: str
    object: Literal["file"]
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: str
    # Ours: what validation found.
    format: str = Field(description="The row format found at upload (messages, "
                        "prompt_completion, text, preference, ...; csv for results).")
    rows: int
    sha256: str


class FileList(ListPage[FileObject]):
    # OpenAI types these as strings only: "" on an empty page.
    first_id: str
    last_id: str


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"]
    deleted: bool


class PreviewRow(BaseModel):
    line: int
    row: Any = Field(description="The row as stored (a JSON object).")
    characters: int
    tokens: int | None = Field(description="With `model`: the tokens of the row's text.")


class FilePreview(BaseModel):
    object: Literal["file.preview"]
    file_id: str
    model: str | None
    rows: int = Field(description="Rows in the whole file.")
    data: list[PreviewRow]
