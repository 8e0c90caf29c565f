"""The schema on first use: the embedded SQLite file builds its own; a PostgreSQL database
without it gets one line saying to run `tunesmith migrate`, never a traceback."""

import os
import subprocess
import sys
import uuid
from pathlib import Path

import sqlalchemy as sa
from alembic.config import Config
from alembic.script import ScriptDirectory

from testbed.servers import REPO, run_cli
from tests.conftest import Stack


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tunesmith.cli", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def _head() -> str:
    config = Config(str(REPO / "alembic.ini"))
    config.set_main_option("script_location", str(REPO / "migrations"))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


def test_keys_create_on_a_fresh_embedded_home_builds_the_schema(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("TUNESMITH_DATABASE_URL", "TUNESMITH_BROKER_URL")}
    env["TUNESMITH_HOME"] = str(tmp_path / "home")
    key = run_cli(["keys", "create", "--project", "me"], env)
    assert key.startswith("ts-")
    assert run_cli(["keys", "create", "--project", "you"], env).startswith("ts-")
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'home' / 'tunesmith.db'}")
    with engine.connect() as connection:
        projects = connection.execute(sa.text("SELECT name FROM projects ORDER BY name")).all()
        revision = connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    engine.dispose()
    assert [p.name for p in projects] == ["me", "you"]
    assert revision == _head()  # every migration ran, not just a create_all


def test_postgres_without_schema_says_run_migrate(stack: Stack) -> None:
    name = f"fresh_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(stack.postgres.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f"CREATE DATABASE {name}"))
    admin.dispose()
    env = {**stack.env,
           "TUNESMITH_DATABASE_URL": stack.postgres.url.rsplit("/", 1)[0] + f"/{name}"}
    for command in (["keys", "create", "--project", "me"], ["serve", "--no-worker"],
                    ["worker"]):
        result = _cli(command, env)
        assert result.returncode == 1, (command, result.stderr[-2000:])
        lines = result.stderr.strip().splitlines()
        assert lines == [f"tunesmith {command[0]}: the database has no Tunesmith schema yet: "
                         "run `tunesmith migrate`"], result.stderr[-2000:]
    # After the migration the same command works.
    run_cli(["migrate"], env)
    assert _cli(["keys", "create", "--project", "me"], env).returncode == 0
