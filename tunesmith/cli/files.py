"""`tunesmith files`: upload, list and preview data sets."""

import json
from pathlib import Path
from typing import Annotated, Any, BinaryIO

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
from rich.table import Table

from tunesmith.cli.options import JsonOption, KeyOption, UrlOption, connected, console, print_json

app = typer.Typer(help="Upload, list and preview training files.", no_args_is_help=True)


class _Counted:
    """A file whose reads advance a progress bar (httpx reads the multipart body in chunks)."""

    def __init__(self, handle: BinaryIO, advance: Any) -> None:
        self.handle, self.advance = handle, advance

    def read(self, size: int = -1) -> bytes:
        chunk = self.handle.read(size)
        self.advance(len(chunk))
        return chunk


@app.command()
def upload(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True,
                                         help="A JSONL file: one example per line.")],
    purpose: Annotated[str, typer.Option(help="OpenAI's purpose field.")] = "fine-tune",
    url: UrlOption = None, api_key: KeyOption = None, as_json: JsonOption = False,
) -> None:
    """Upload a training or validation file; every bad line is reported with its number."""
    with connected(url, api_key) as client, \
            Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                     TransferSpeedColumn(), console=console, transient=True) as progress, \
            path.open("rb") as handle:
        task = progress.add_task(f"uploading {path.name}", total=path.stat().st_size)
        body = _Counted(handle, lambda n: progress.advance(task, n))
        uploaded = client.post("/v1/files", files={"file": (path.name, body)},
                               data={"purpose": purpose})
    if as_json:
        print_json(uploaded)
    else:
        console.print(f"{uploaded['id']}  {uploaded['filename']}  {uploaded['bytes']} bytes")


@app.command("list")
def list_files(
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 20,
    url: UrlOption = None, api_key: KeyOption = None, as_json: JsonOption = False,
) -> None:
    """List your project's files."""
    with connected(url, api_key) as client:
        files = client.get("/v1/files", params={"limit": limit})["data"][:limit]
    if as_json:
        print_json(files)
        return
    table = Table("id", "filename", "purpose", "bytes", "status")
    for f in files:
        table.add_row(f["id"], f["filename"], f["purpose"], str(f["bytes"]), f.get("status"))
    console.print(table)


def _summary(row: dict[str, Any]) -> tuple[str, str]:
    """What kind of example a row is, and its text in brief."""
    if "messages" in row:
        turns = row["messages"]
        return "chat", " | ".join(f"{t.get('role')}: {t.get('content')}" for t in turns)
    kind = next((k for k in ("conversations", "prompt", "text", "input") if k in row), "json")
    return kind, json.dumps(row, ensure_ascii=False)


@app.command()
def preview(
    file_id: Annotated[str, typer.Argument(help="The file's id (file-...).")],
    rows: Annotated[int, typer.Option(help="How many rows from the top.")] = 5,
    url: UrlOption = None, api_key: KeyOption = None,
) -> None:
    """Show the first rows of an uploaded file."""
    with connected(url, api_key) as client:
        lines: list[str] = []
        with client.stream(f"/v1/files/{file_id}/content") as response:
            for line in response.iter_lines():
                if line.strip():
                    lines.append(line)
                if len(lines) >= rows:
                    break
    table = Table("line", "kind", "example", show_lines=True)
    for number, line in enumerate(lines, 1):
        kind, text = _summary(json.loads(line))
        table.add_row(str(number), kind, text[:400])
    console.print(table)
