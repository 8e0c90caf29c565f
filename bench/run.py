"""Run every benchmark and write bench/results/latest.{md,json}.

    python -m bench                     # everything, full size (see bench/README.md)
    python -m bench --quick             # small settings, to check the benchmarks work
    python -m bench --only queue --queue-jobs 20
    python bench/run.py ...             # the same

Each benchmark starts from one shared stack (PostgreSQL, Redis, API, workers in a temporary
folder) and reports figures that are ratios against a baseline measured in the same run.
"""

import sys
from pathlib import Path

if __package__ in (None, ""):
    # Run as `python bench/run.py`: put the repository first on the path instead of bench/,
    # whose queue.py would otherwise shadow the standard library's `queue`.
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import os
import subprocess
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from bench import api_load, event_streams, overhead, sft_speed
from bench import queue_wait as queue_bench
from bench.report import Figure, machine, markdown, write
from bench.stack import Stack, running_stack

BENCHES = ("overhead", "queue", "api_load", "event_streams", "sft_speed", "gpu_tunings")
REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="small settings everywhere (a few minutes), to check it works")
    parser.add_argument("--only", default=",".join(BENCHES),
                        help=f"comma-separated subset of {','.join(BENCHES)}")
    parser.add_argument("--queue-jobs", type=int, default=None,
                        help="jobs through the two workers (default 200; 8 with --quick)")
    parser.add_argument("--scale-jobs", type=int, default=None,
                        help="jobs bulk-inserted for the scale test (default 100000)")
    parser.add_argument("--scale-events", type=int, default=None,
                        help="events bulk-inserted for the scale test (default 1000000)")
    parser.add_argument("--requests", type=int, default=None,
                        help="requests per route and concurrency (default 400)")
    parser.add_argument("--concurrency", default=None,
                        help="comma-separated client concurrencies (default 1,4,16,64)")
    parser.add_argument("--overhead-repeats", type=int, default=None)
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="OMP_NUM_THREADS for every training process (service and bare); "
                             "default: torch's own choice (all cores)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    return parser.parse_args(argv)


def _failed(bench: str, exc: BaseException) -> tuple[list[Figure], dict[str, Any]]:
    return ([Figure(bench, "benchmark", None, "", "", None,
                    note=f"failed: {type(exc).__name__}: {str(exc)[:200]}")],
            {"error": traceback.format_exc()})


def _measure(bench: str, call: Callable[[], tuple[list[Figure], dict[str, Any]]]
             ) -> tuple[list[Figure], dict[str, Any]]:
    """Run one benchmark, timed; a broken one is a line in the table, not a lost run."""
    print(f"== {bench}", flush=True)
    t0 = time.monotonic()
    try:
        found, detail = call()
    except Exception as exc:
        traceback.print_exc()
        found, detail = _failed(bench, exc)
    detail["duration_s"] = round(time.monotonic() - t0, 1)
    print(markdown(found), flush=True)
    return found, detail


def gpu_figures(args: argparse.Namespace) -> tuple[list[Figure], dict[str, Any]]:
    """Run bench/gpu_tunings.py where CUDA is; otherwise say so in the table."""
    from bench import gpu_tunings

    probe = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.is_available())"],
                           capture_output=True, text=True, cwd=REPO, timeout=120)
    if probe.stdout.strip() != "True":
        return gpu_tunings.not_run_figures("not run: no GPU lent"), {"cuda": False}
    out = REPO / "bench" / "results" / "gpu_tunings.json"
    result = subprocess.run([sys.executable, "-m", "bench.gpu_tunings", "--json", str(out)]
                            + (["--quick"] if args.quick else []),
                            cwd=REPO, capture_output=True, text=True, timeout=3600)
    if result.returncode != 0:
        raise RuntimeError(f"gpu_tunings failed:\n{result.stderr[-3000:]}")
    return gpu_tunings.figures_from_file(out)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    only = [b.strip() for b in args.only.split(",") if b.strip()]
    unknown = set(only) - set(BENCHES)
    if unknown:
        sys.exit(f"unknown benchmark(s) {sorted(unknown)}; known: {', '.join(BENCHES)}")
    started, clock = datetime.now(UTC), time.monotonic()
    info: dict[str, Any] = {"started": started.isoformat(timespec="seconds"),
                            "machine": machine(), "argv": sys.argv[1:]}
    extra_env = {"OMP_NUM_THREADS": str(args.torch_threads)} if args.torch_threads else {}
    settings = {
        "overhead": overhead.settings_from(args),
        "queue": queue_bench.settings_from(args),
        "api_load": api_load.settings_from(args),
        "event_streams": event_streams.settings_from(args),
        "sft_speed": sft_speed.settings_from(args),
    }
    info["settings"] = ("quick" if args.quick else "full") + (
        f", OMP_NUM_THREADS={args.torch_threads}" if args.torch_threads else "")
    info["bench_settings"] = {k: v.__dict__ for k, v in settings.items()}
    runners: dict[str, Callable[[Stack], tuple[list[Figure], dict[str, Any]]]] = {
        "overhead": lambda s: overhead.run(s, settings["overhead"]),
        "queue": lambda s: queue_bench.run(s, settings["queue"]),
        "api_load": lambda s: api_load.run(s, settings["api_load"]),
        "event_streams": lambda s: event_streams.run(s, settings["event_streams"]),
    }
    figures: list[Figure] = []
    details: dict[str, Any] = {}
    stack_benches = [b for b in BENCHES if b in only and b in runners]
    if stack_benches:
        with running_stack(keep=args.keep, extra_env=extra_env) as stack:
            for bench in stack_benches:
                found, details[bench] = _measure(bench, lambda b=bench: runners[b](stack))
                figures += found
    if "sft_speed" in only:  # bare trl in processes of its own: no stack
        found, details["sft_speed"] = _measure(
            "sft_speed", lambda: sft_speed.run(settings["sft_speed"]))
        figures += found
    if "gpu_tunings" in only:
        try:
            found, detail = gpu_figures(args)
        except Exception as exc:
            found, detail = _failed("gpu_tunings", exc)
        figures += found
        details["gpu_tunings"] = detail
    info["duration_s"] = time.monotonic() - clock
    info["load_average_end"] = os.getloadavg()
    md_path, json_path = write(figures, details, info)
    print(md_path.read_text())
    print(f"wrote {md_path} and {json_path}")


if __name__ == "__main__":
    main()
