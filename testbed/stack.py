"""What every running stack holds (the test session's, a fault test's, the benchmarks'):
the backing servers, the API, and how to reach them."""

from dataclasses import dataclass
from pathlib import Path

from testbed.jobs import Project
from testbed.servers import Postgres, Redis, Service


@dataclass
class Servers:
    root: Path
    env: dict[str, str]
    postgres: Postgres
    redis: Redis
    api: Service
    url: str

    @property
    def home(self) -> Path:
        return Path(self.env["TUNESMITH_HOME"])

    @property
    def tiny_model(self) -> Path:
        return self.home / "models" / "tiny-llama"

    def project(self, name: str) -> Project:
        """A new project with a key of its own, and an HTTP client that sends it."""
        return Project(self.url, self.env, name)
