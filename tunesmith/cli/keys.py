"""`tunesmith keys`: API keys, on the server (it writes to the service's database)."""

import sys
from typing import Annotated

import typer

from tunesmith.cli.server import schema_ready

app = typer.Typer(help="Manage API keys (run on the server).", no_args_is_help=True)


@app.command()
def create(project: Annotated[str, typer.Option(help="The project the key belongs to.")]
           = "default") -> None:
    """Print a new API key."""
    from tunesmith.db.schema import ensure_schema
    from tunesmith.db.session import session_scope
    from tunesmith.keys import create_key

    with schema_ready("keys"):
        ensure_schema()
        with session_scope() as session:
            key, secret = create_key(session, project_name=project)
            print(secret)
            print(f"key {key.id} (prefix {key.prefix}) for project '{project}'",
                  file=sys.stderr)


@app.command()
def revoke(key: Annotated[str, typer.Argument(help="The key's id or prefix.")]) -> None:
    """Revoke a key by id or prefix."""
    from tunesmith.db.schema import ensure_schema
    from tunesmith.db.session import session_scope
    from tunesmith.keys import revoke_key

    with schema_ready("keys"):
        ensure_schema()
        with session_scope() as session:
            count = revoke_key(session, prefix_or_id=key)
    if not count:
        sys.exit(f"no active key with id or prefix '{key}'")
    print(f"revoked {count} key(s)")
