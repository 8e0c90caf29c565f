"""A test run that fails or is interrupted leaves no server behind: a stack whose second
server cannot start stops the first, and SIGTERM to a process holding a whole stack stops
all of it. (A failed run once left seven PostgreSQL servers running.)"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed import servers
from testbed.servers import REPO, start_backing_servers, wait_until


def _processes_under(root: Path) -> list[str]:
    """Live processes whose command line names a path under `root`."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if str(root) in cmdline and state != "Z":
            found.append(f"{proc.name} {cmdline}")
    return found


@pytest.fixture
def root() -> Iterator[Path]:
    # Not under pytest's tmp_path: the postgres user must reach its data folder.
    path = Path(tempfile.mkdtemp(prefix="tunesmith-cleanup-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_stack_whose_redis_cannot_start_stops_its_postgres(
        root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(servers, "REDIS_SERVER", str(root / "no-such-redis-server"))
    with pytest.raises(FileNotFoundError):
        start_backing_servers(root, {})
    # PostgreSQL had started (its data folder exists) and was stopped again.
    assert (root / "pg" / "pgdata" / "PG_VERSION").is_file()
    assert not _processes_under(root), _processes_under(root)


SCRIPT = """
import sys, time
from pathlib import Path
from testbed.servers import start_backing_servers
postgres, redis, env = start_backing_servers(Path(sys.argv[1]), {})
print("started", postgres.port, redis.port, flush=True)
time.sleep(600)
"""


def test_sigterm_to_a_process_holding_a_stack_stops_every_server(root: Path) -> None:
    process = subprocess.Popen([sys.executable, "-c", SCRIPT, str(root)], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("started"), process.stderr.read() if process.stderr else ""
        running = _processes_under(root)
        assert any("postgres" in p for p in running) and any("redis" in p for p in running), \
            running
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        wait_until(lambda: not _processes_under(root), timeout=30,
                   what=f"the servers to stop: {_processes_under(root)}")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
