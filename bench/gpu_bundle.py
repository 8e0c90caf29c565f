"""Build the bundle of wheels a bare GPU machine needs to run `python -m bench.gpu_check`.

The lent GPU machine has no network and its own Python 3.12 with torch (CUDA), numpy and many
other packages, but none of the API's (fastapi, pydantic, SQLAlchemy, celery, ...) and an
older transformers (FACTS.md, "GPU"). This resolves what the project needs (pyproject's base
dependencies and its `worker` and `gpu` extras) at the versions installed here, leaves out
what that machine already has (torch, triton, the CUDA libraries, numpy, pyarrow, ... from
/work/.library/device/KINDS.md) except the training stack the service is tested against, and
installs the rest for CPython 3.12 manylinux x86-64 into one folder (`pip install --target`),
packed as a tar.gz:

    python -m bench.gpu_bundle                      # writes .gpu_bundle/site.tar.gz (~40 MB)

then, in one device call from the repository root (`.gpu_bundle` is git-ignored, so it is
named in `carry`):

    tar xzf .gpu_bundle/site.tar.gz -C /tmp && export PYTHONPATH=/tmp/site:$PWD \
      PYTHONUNBUFFERED=1 && python3 -m bench.gpu_check --out $OUT/gpu_check
"""

import argparse
import importlib.metadata as metadata
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64",
             "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64")
# The machine's Python and what it has (KINDS.md, read 2026-11-17). Left out of the bundle.
TARGET_PYTHON = "3.12"
MACHINE_PACKAGES = """
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs
certifi charset-normalizer click cloudpickle colorama contourpy cycler einops filelock
frozenlist fsspec h11 hf-xet httpcore httpx huggingface-hub idna jinja2 joblib markdown
markdown-it-py markupsafe mdurl mpmath multidict networkx numpy packaging pandas pillow pip
pluggy propcache protobuf psutil pyarrow pygments pyparsing python-dateutil pyyaml regex
requests rich safetensors scipy setuptools shellingham six sympy tokenizers torch tqdm
transformers triton typer typing-extensions typing-inspect urllib3 uvloop wheel xxhash yarl
zipp peft
"""
ON_THE_MACHINE = {canonicalize_name(n) for n in MACHINE_PACKAGES.split()}
# Carried even though the machine has a version: the service is tested against these.
TRAINING_STACK = {canonicalize_name(n) for n in (
    "transformers", "peft", "trl", "datasets", "bitsandbytes", "accelerate", "huggingface-hub",
    "tokenizers", "safetensors")}
NEVER = re.compile(r"^(torch|torchvision|torchaudio|triton|numpy|nvidia-.*|cuda-.*)$")
# Not installed on this CPU machine (the `gpu` extra): the version FACTS.md saw work.
NOT_HERE = {"liger-kernel": "0.8.5"}
# bitsandbytes ships a library per CUDA version; the machine's torch is CUDA 13.0.
KEEP_BNB_LIBRARY = re.compile(r"libbitsandbytes_(cpu|cuda130)\.so$")


def top_level_requirements() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project.get("optional-dependencies", {})
    return [Requirement(r) for r in project["dependencies"] + extras.get("worker", [])
            + extras.get("gpu", [])]


def closure(requirements: list[Requirement]) -> dict[str, str]:
    """Every distribution they need, transitively, with the version installed here."""
    environment = {**default_environment(), "python_version": TARGET_PYTHON,
                   "python_full_version": f"{TARGET_PYTHON}.3", "sys_platform": "linux",
                   "platform_system": "Linux", "platform_machine": "x86_64"}
    found: dict[str, str] = {}
    todo = list(requirements)
    while todo:
        requirement = todo.pop()
        if requirement.marker and not requirement.marker.evaluate({**environment, "extra": ""}):
            continue
        name = canonicalize_name(requirement.name)
        if name in found:
            continue
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = NOT_HERE[name]  # KeyError: a new dependency to name in NOT_HERE
            continue
        todo += [Requirement(r) for r in metadata.requires(name) or []]
    return found


def to_carry(found: dict[str, str]) -> dict[str, str]:
    return {name: version for name, version in sorted(found.items())
            if not NEVER.match(name)
            and (name not in ON_THE_MACHINE or name in TRAINING_STACK)}


def build(out: Path) -> Path:
    carry = to_carry(closure(top_level_requirements()))
    with tempfile.TemporaryDirectory(prefix="gpu-bundle-") as tmp:
        site = Path(tmp) / "site"
        command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                   "--no-compile", "--only-binary=:all:", "--python-version", TARGET_PYTHON,
                   "--implementation", "cp", "--target", str(site),
                   *[arg for p in PLATFORMS for arg in ("--platform", p)],
                   *[f"{name}=={version}" for name, version in carry.items()]]
        subprocess.run(command, check=True)
        for library in site.glob("bitsandbytes/libbitsandbytes_*.so"):
            if not KEEP_BNB_LIBRARY.search(library.name):
                library.unlink()
        shutil.rmtree(site / "bin", ignore_errors=True)  # console scripts with our shebang
        out.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(out, "w:gz") as archive:
            archive.add(site, arcname="site")
    print(f"{out}: {len(carry)} distributions, {out.stat().st_size / 2**20:.1f} MiB")
    print(" ".join(f"{name}=={version}" for name, version in carry.items()))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_bundle", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / ".gpu_bundle" / "site.tar.gz")
    build(parser.parse_args().out)


if __name__ == "__main__":
    main()
