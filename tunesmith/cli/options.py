"""What every client command shares: where the service is, the key, and one error style."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console

from tunesmith.client.http import APIError, Client

console = Console()
errors = Console(stderr=True)

UrlOption = Annotated[str | None, typer.Option(
    "--url", envvar="TUNESMITH_URL", show_envvar=True,
    help="The service's base URL (default http://127.0.0.1:8000).")]
KeyOption = Annotated[str | None, typer.Option(
    "--api-key", envvar="TUNESMITH_API_KEY", help="An API key of your project.",
    show_envvar=True)]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the API's JSON instead.")]

@contextmanager
def connected(url: str | None, api_key: str | None) -> Iterator[Client]:
    """A client; an API error ends the command with its message and exit code 1."""
    try:
        yield Client(url, api_key)
    except APIError as exc:
        errors.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from None


def print_json(data: Any) -> None:
    console.print_json(data=data)
