"""requirements.lock agrees with pyproject.toml, and every install reads it.

Offline: `make lock-check` re-resolves against the package index to see whether the lock is
exactly what `make lock` would write; these tests catch the usual slip (a requirement added
or narrowed in pyproject.toml without `make lock`) with no network.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
MAKEFILE = (ROOT / "Makefile").read_text()
# Extras no resolver can satisfy beside the rest (gptqmodel 7.6.0 pins numpy==2.2.6): pinned
# exactly in pyproject.toml and installed --no-deps by the Makefile, so they stay out of the lock.
NOT_LOCKED = {"gptq"}


def _pins() -> dict[str, list[Version]]:
    """Package name -> its pinned versions (two where the lock forks on a marker)."""
    pins: dict[str, list[Version]] = {}
    for line in LOCK.read_text().splitlines():
        if not line or line[0] in "# ":  # the header and uv's `# via` notes
            continue
        requirement = Requirement(line)
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", line
        pins.setdefault(canonicalize_name(requirement.name), []).append(
            Version(specifier.version))
    return pins


def _requirements() -> list[tuple[str, Requirement]]:
    """(where it is declared, requirement) for the base set, every extra and the MLflow
    server's list."""
    found = [("dependencies", Requirement(r)) for r in PROJECT["dependencies"]]
    for extra, reqs in PROJECT["optional-dependencies"].items():
        if extra in NOT_LOCKED:
            continue
        found += [(f"[{extra}]", Requirement(r)) for r in reqs]
    mlflow_server = (ROOT / "requirements-mlflow-server.in").read_text().splitlines()
    found += [("requirements-mlflow-server.in", Requirement(r)) for r in mlflow_server
              if r and not r.startswith("#")]
    return found


def test_every_pyproject_requirement_is_pinned_within_its_range() -> None:
    pins = _pins()
    problems = []
    for where, requirement in _requirements():
        versions = pins.get(canonicalize_name(requirement.name))
        if not versions:
            problems.append(f"{where} {requirement}: not in requirements.lock")
        elif not any(requirement.specifier.contains(v, prereleases=True) for v in versions):
            problems.append(f"{where} {requirement}: the lock pins {versions}")
    assert not problems, "run `make lock`:\n" + "\n".join(problems)


def test_the_lock_covers_every_extra() -> None:
    """A new extra in pyproject.toml must be compiled into the lock (Makefile LOCK_EXTRAS)."""
    header = LOCK.read_text().splitlines()[1]
    assert header.lstrip("# ").startswith(
        "uv pip compile pyproject.toml requirements-mlflow-server.in "), header
    locked = set(re.findall(r"--extra (\S+)", header))
    assert locked == set(PROJECT["optional-dependencies"]) - NOT_LOCKED, (locked, header)
    assert set(re.findall(r"--extra (\S+)", MAKEFILE)) == locked


def test_the_makefile_torch_is_the_locked_torch() -> None:
    torch = re.search(r"^TORCH \?= torch==(\S+)$", MAKEFILE, re.M)
    assert torch, "Makefile: TORCH ?= torch==<version>"
    assert _pins()["torch"] == [Version(torch.group(1))]


def test_every_dependency_install_reads_the_lock() -> None:
    """The Makefile's install step and both images pin with it; only torch's first CPU
    install and mlflow's --no-deps install (its own pins are wrong for us) go without."""
    install = MAKEFILE.split("$(VENV)/.installed:", 1)[1].split("\n\n", 1)[0]
    commands = [c for c in re.split(r"\n\t", install.replace("\\\n", " ")) if "pip install" in c]
    unlocked = [c for c in commands if "-c $(LOCK)" not in c
                and "$(TORCH)" not in c and "--no-deps" not in c and "--upgrade pip" not in c]
    assert len(commands) >= 4 and not unlocked, unlocked
    for dockerfile in ("Dockerfile.api", "Dockerfile.gpu"):
        lines = (ROOT / dockerfile).read_text().splitlines()
        text = "\n".join(ln for ln in lines if not ln.startswith("#")).replace("\\\n", " ")
        assert re.search(r"^COPY .*requirements\.lock", text, re.M), dockerfile
        installs = re.findall(r"pip install [^&\n]*", text)
        assert installs and all("requirements.lock" in i for i in installs), installs


def test_unlocked_extras_are_exact_and_installed_as_listed() -> None:
    """The gptq extra's exact pins are what the Makefile installs with --no-deps."""
    gptq = re.search(r"^GPTQ_PACKAGES \?= (.*?)(?<!\\)\n", MAKEFILE, re.M | re.S)
    assert gptq, "Makefile: GPTQ_PACKAGES ?= ..."
    installed = {canonicalize_name(Requirement(r).name): str(Requirement(r).specifier)
                 for r in gptq.group(1).replace("\\\n", " ").split()}
    declared = {canonicalize_name(Requirement(r).name): str(Requirement(r).specifier)
                for r in PROJECT["optional-dependencies"]["gptq"]}
    assert installed == declared
    assert all(spec.startswith("==") for spec in declared.values())
