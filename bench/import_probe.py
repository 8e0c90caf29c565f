"""Where a training child's cold start and exit go: `python -m bench.import_probe`.

Imports what `python -m worker.training.child` imports, in its order, one package at a time, and
prints one JSON line with the seconds each one added. An atexit handler registered before
anything else runs last of all handlers and stamps the time, so the parent can tell how long
the interpreter took to go away after the work was done (teardown of torch & co).
"""

import time

STARTED = time.time()

import atexit  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402

# In the order the child meets them: worker.training.child's own imports, then what the
# objective and tuning modules pull in (peft imports bitsandbytes when it is installed).
MODULES = ("worker.training.child", "torch", "transformers", "bitsandbytes", "peft", "datasets",
           "trl")


def _stamp() -> None:
    sys.stderr.write(json.dumps({"atexit": time.time()}) + "\n")
    sys.stderr.flush()


def main() -> None:
    atexit.register(_stamp)
    seconds: dict[str, float] = {}
    for name in MODULES:
        start = time.time()
        importlib.import_module(name)
        seconds[name] = time.time() - start
    start = time.time()
    from worker.registry import load_all

    load_all()
    seconds["worker objectives and tunings"] = time.time() - start
    print(json.dumps({"started": STARTED, "imports": seconds, "done": time.time()}), flush=True)


if __name__ == "__main__":
    main()
