"""Tunesmith: run the fine-tuning service, or drive a running one.

Server commands (serve, worker, migrate, keys, tiny-model) run the service; client commands
(files, jobs, models, chat) talk to a running one over HTTP (TUNESMITH_URL,
TUNESMITH_API_KEY). Each group is a module of its own; none imports the service's code at
start, so `tunesmith jobs list` starts fast."""

import typer

from tunesmith.cli import files, jobs, keys, models, server

app = typer.Typer(name="tunesmith", help=__doc__.split("\n\n")[0], no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)
server.register(app)
app.add_typer(keys.app, name="keys")
app.add_typer(files.app, name="files")
app.add_typer(jobs.app, name="jobs")
models.register(app)


def main(argv: list[str] | None = None) -> None:
    app(args=argv, prog_name="tunesmith")
