"""How fast the `tunesmith` client commands start: `python -m bench.cli_start [--runs N]`.

Each command runs as a user types it, in a fresh interpreter, against a port where nothing
listens (so the figure is start-up plus one refused connection, no server time). Baselines
in the same run: a bare interpreter and one that only imports httpx. Also lists which heavy
modules a client command imports (none should: torch, transformers, sqlalchemy, celery)."""

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "python -c pass (baseline)": [sys.executable, "-c", "pass"],
    "python -c 'import httpx'": [sys.executable, "-c", "import httpx"],
    "tunesmith --help": [sys.executable, "-m", "tunesmith.cli", "--help"],
    "tunesmith jobs list": [sys.executable, "-m", "tunesmith.cli", "jobs", "list",
                            "--url", "http://127.0.0.1:9", "--api-key", "x"],
    "tunesmith serve --help": [sys.executable, "-m", "tunesmith.cli", "serve", "--help"],
}
HEAVY = ("torch", "transformers", "sqlalchemy", "celery", "tunesmith.settings", "api")
PROBE = ("import sys, tunesmith.cli; print(','.join(m for m in {heavy!r} "
         "if m in sys.modules) or 'none')")


def median_seconds(command: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, check=False)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    figures = {name: median_seconds(command, args.runs) for name, command in COMMANDS.items()}
    base = figures["python -c pass (baseline)"]
    print(f"| command | median of {args.runs} (s) | x bare python |\n|---|---|---|")
    for name, seconds in figures.items():
        print(f"| {name} | {seconds:.3f} | {seconds / base:.1f} |")
    heavy = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY)],
                           capture_output=True, text=True, check=True).stdout.strip()
    print(f"\nheavy modules imported by `import tunesmith.cli`: {heavy}")


if __name__ == "__main__":
    main()
