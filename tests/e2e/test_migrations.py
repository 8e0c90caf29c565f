"""The migrations build exactly the schema the models declare, on PostgreSQL and on the
embedded SQLite file, and walk down to nothing and back up again."""

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from testbed.servers import REPO
from tests.conftest import Stack

# Runs in a child process so the settings (read once at import) take the URL under test.
CHECK = """
import json

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext

from tunesmith.db import models  # noqa: F401
from tunesmith.db.base import Base
from tunesmith.db.session import get_engine

config = Config()
config.set_main_option("script_location", "migrations")


def differences():
    with get_engine().connect() as connection:
        return compare_metadata(MigrationContext.configure(connection), Base.metadata)


command.upgrade(config, "head")
first = differences()
command.downgrade(config, "base")
with get_engine().connect() as connection:
    left = sorted(sa.inspect(connection).get_table_names())
command.upgrade(config, "head")
print(json.dumps({"first": [str(d) for d in first], "left_after_downgrade": left,
            "after_round_trip": [str(d) for d in differences()]}))
"""


def _check(url: str, home: Path) -> dict[str, list[str]]:
    env = {"TUNESMITH_DATABASE_URL": url, "TUNESMITH_HOME": str(home), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", CHECK],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture
def postgres_database(stack: Stack) -> str:
    """A new, empty database on the test run's PostgreSQL server."""
    name = f"migrations_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(stack.postgres.url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sa.text(f"CREATE DATABASE {name}"))
    engine.dispose()
    return stack.postgres.url.rsplit("/", 1)[0] + f"/{name}"


def test_postgres_schema_matches_models(postgres_database: str, tmp_path: Path) -> None:
    result = _check(postgres_database, tmp_path)
    assert result["first"] == []
    assert result["left_after_downgrade"] == ["alembic_version"]
    assert result["after_round_trip"] == []


def test_sqlite_schema_matches_models(tmp_path: Path) -> None:
    result = _check(f"sqlite:///{tmp_path / 'tunesmith.db'}", tmp_path)
    assert result["first"] == []
    assert result["left_after_downgrade"] == ["alembic_version"]
    assert result["after_round_trip"] == []
