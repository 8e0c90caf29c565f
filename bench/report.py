"""Figures, each a ratio against a baseline measured in the same run, and the tables they make."""

import json
import os
import platform
import statistics
import subprocess
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Figure:
    """One line of the table: a measured value, the baseline it is compared with, and the ratio.

    `value` and `baseline` share `unit`; `ratio` is value ÷ baseline. A figure that could not
    be measured keeps `value` None and says why in `note`.
    """

    bench: str
    name: str
    value: float | None
    unit: str
    baseline_name: str
    baseline: float | None
    note: str = ""
    ratio: float | None = field(default=None)

    def __post_init__(self) -> None:
        if self.ratio is None and self.value is not None and self.baseline:
            self.ratio = self.value / self.baseline


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0-100) by linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "-"


def _command_version(command: list[str]) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "-"


def machine() -> dict[str, Any]:
    """What the figures ran on: they mean little without it."""
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor())
    memory_kib = next(int(line.split()[1]) for line in
                      Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal"))
    return {
        "nproc": os.cpu_count(), "memory_gib": round(memory_kib / 2**20, 1), "cpu": cpu,
        "kernel": platform.release(), "python": platform.python_version(),
        "load_average": os.getloadavg(),
        "versions": {p: _version(p) for p in (
            "torch", "transformers", "peft", "trl", "datasets", "accelerate", "fastapi",
            "uvicorn", "sqlalchemy", "psycopg", "celery", "httpx")},
        "postgres": _command_version(["/usr/lib/postgresql/15/bin/postgres", "--version"]),
        "redis": _command_version(["redis-server", "--version"]).split(" sha=")[0],
    }


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0 or abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def markdown(figures: list[Figure], *, header: str = "") -> str:
    lines = [header] if header else []
    lines += ["| benchmark | figure | value | baseline | ratio | note |",
              "|---|---|---|---|---|---|"]
    for f in figures:
        value = f"{_number(f.value)} {f.unit}".strip() if f.value is not None else "not run"
        baseline = (f"{f.baseline_name}: {_number(f.baseline)} {f.unit}".strip()
                    if f.baseline is not None else f.baseline_name or "-")
        ratio = f"{f.ratio:.3g}" if f.ratio is not None else "-"
        lines.append(f"| {f.bench} | {f.name} | {value} | {baseline} | {ratio} | {f.note} |")
    return "\n".join(lines) + "\n"


def write(figures: list[Figure], details: dict[str, Any], info: dict[str, Any],
          folder: Path = RESULTS) -> tuple[Path, Path]:
    """Write latest.md and latest.json into folder; returns both paths."""
    folder.mkdir(parents=True, exist_ok=True)
    md_path, json_path = folder / "latest.md", folder / "latest.json"
    m = info["machine"]
    header = (f"Run {info['started']} ({info['duration_s']:.0f} s, settings: "
              f"{info['settings']}) on {m['nproc']} CPUs ({m['cpu']}), {m['memory_gib']} GiB; "
              f"load average at start {m['load_average'][0]:.2f}, at end "
              f"{info['load_average_end'][0]:.2f}.\n")
    md_path.write_text(markdown(figures, header=header))
    json_path.write_text(json.dumps({**info, "figures": [asdict(f) for f in figures],
                                     "details": details}, indent=2, default=str))
    return md_path, json_path
