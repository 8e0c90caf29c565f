"""`tunesmith models list` and `tunesmith chat MODEL`: OpenAI's /v1/models and
/v1/chat/completions shapes, served by the inference routes."""

from typing import Annotated, Any

import typer
from rich.prompt import Prompt
from rich.table import Table

from tunesmith.cli.options import JsonOption, KeyOption, UrlOption, connected, console, print_json

app = typer.Typer(help="Models the service can answer with.", no_args_is_help=True)


@app.command("list")
def list_models(url: UrlOption = None, api_key: KeyOption = None,
                as_json: JsonOption = False) -> None:
    """List base and fine-tuned models (GET /v1/models)."""
    with connected(url, api_key) as client:
        models = client.get("/v1/models")["data"]
    if as_json:
        print_json(models)
        return
    table = Table("id", "owned by", "created")
    for model in models:
        table.add_row(model["id"], model.get("owned_by", ""), str(model.get("created", "")))
    console.print(table)


def chat(
    model: Annotated[str, typer.Argument(help="A model id from `tunesmith models list`.")],
    message: Annotated[str | None, typer.Option(
        "--message", "-m", help="Ask this once and exit, instead of a conversation.")] = None,
    system: Annotated[str | None, typer.Option(help="A system message first.")] = None,
    max_tokens: Annotated[int | None, typer.Option(
        help="Longest answer, in tokens; unset, the server fills what the context leaves.")
    ] = None,
    temperature: Annotated[float, typer.Option(help="0 answers greedily.")] = 0.7,
    url: UrlOption = None, api_key: KeyOption = None,
) -> None:
    """Talk to a model (POST /v1/chat/completions); an empty line or Ctrl-D ends."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    with connected(url, api_key) as client:
        while True:
            if message is not None:
                prompt = message
            else:
                try:
                    prompt = Prompt.ask("[bold]you[/bold]", console=console, default="",
                                        show_default=False)
                except EOFError:
                    return
            if not prompt.strip():
                return
            messages.append({"role": "user", "content": prompt})
            body: dict[str, Any] = {"model": model, "messages": messages,
                                    "temperature": temperature}
            # A fixed default would be refused by models with a short context (400).
            if max_tokens is not None:
                body["max_tokens"] = max_tokens
            answer = client.post("/v1/chat/completions", json=body)["choices"][0]["message"]
            messages.append({"role": "assistant", "content": answer.get("content") or ""})
            console.print(answer.get("content") or "", highlight=False, markup=False)
            if message is not None:
                return


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="models")
    root.command()(chat)
