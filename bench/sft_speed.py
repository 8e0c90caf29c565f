"""SFT speed settings, chosen by measurement: each against trl's defaults, loss curves side by side.

Issue 5 asks for the fastest pipeline settings that keep the loss curve the baseline's. Each
variant trains the same tiny Llama (hidden 256, 4 layers, tokenizer limit 256) on the same
rows with bare trl + peft, and is compared with the baseline on the same data and tuning:

- baseline: trl's defaults for the optimizer and batches (padded batches,
  `adamw_torch_fused`), activation checkpointing off (trl's SFTConfig turns it on by default;
  here it is the memory option measured below, not part of the baseline),
- padding_free: `worker.data.batching.padding_free_collator` (rows joined, no pad tokens),
- adamw_foreach: `optim="adamw_torch"` (the foreach implementation),
- gradient_checkpointing: activation checkpointing on (a memory option: lower peak RSS,
  slower steps),
- service: what the service picks, padding-free iff `worker.data.batching.choose_layout("auto")`
  says so on the rows' lengths. It trains with the settings of one of the cells above, so it
  reuses that cell's measurement rather than training again.

Two data shapes from the bundled corpus (no randomness): "short" (answers of 1..10
sentences, 28..206 tokens, mean 97: much padding) and "long" (8..16 sentences, 72..318
tokens, mean 180, 8 rows cut at 256: most batches hold a row near the limit, and the joined
sequence's attention grows with the square of the batch's total), each with LoRA (r=8,
all-linear, lr 2e-4) and full fine-tuning (lr 2e-5), the service's default learning rates.

Every cell (data, tuning, variant, repeat) runs in a process of its own, so its peak RSS
(VmHWM, reset at the cell's start) is its own. The processes are forked from a
multiprocessing forkserver that imported torch, transformers, trl, peft and datasets once:
a fresh interpreter per cell would spend ~6 s of each cell's wall clock on imports (half of
the run's budget), and the imports are alike for every cell. `--fresh` runs each cell in a
new interpreter instead (`python -m bench.sft_speed --cell JSON`, which prints one JSON line).
Cells run twice, the second time in reverse order, and tokens/s is the median of the two.

    OMP_NUM_THREADS=1 python -m bench.sft_speed --json /tmp/sft_speed.json
    OMP_NUM_THREADS=1 python -m bench.sft_speed --quick
"""

import argparse
import contextlib
import importlib
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parents[1])  # `python bench/sft_speed.py`

from bench.data import corpus_sentences
from bench.report import Figure, markdown

BENCH = "sft_speed"
REPO = Path(__file__).resolve().parents[1]
# Answer lengths in sentences, lowest..highest, per data shape.
DATA_SHAPES: dict[str, tuple[int, int]] = {"short": (1, 10), "long": (8, 16)}
TUNINGS = ("lora", "full")
# The learning rates the service defaults to for these tunings (worker/tunings/*.py).
LEARNING_RATES = {"lora": 2e-4, "full": 2e-5}
VARIANTS = ("baseline", "padding_free", "adamw_foreach", "gradient_checkpointing")
SEED = 42
BATCH_SIZE = 8
MAX_LENGTH = 256
# Imported once by the forkserver. Not this module: a child re-runs the main module by name
# (multiprocessing's spawn.prepare), and runpy warns when that module is already imported.
HEAVY_MODULES = ["torch", "transformers", "datasets", "peft", "trl", "trl.trainer.sft_trainer"]


@dataclass(frozen=True)
class Settings:
    # 16 steps (2 epochs of the 64 rows) in each of 32 cells: the default run took 316 s on
    # two shared cores with OMP_NUM_THREADS=1; `--steps 40` gives longer curves (~13 min).
    steps: int = 16
    repeats: int = 2
    rows: int = 64
    hidden_size: int = 256
    num_layers: int = 4
    # A new interpreter per cell (slower: imports every time) rather than forkserver children.
    fresh: bool = False
    # torch threads per cell (`python -m bench --torch-threads N`); None: torch's own choice,
    # which follows OMP_NUM_THREADS.
    threads: int | None = None


QUICK = Settings(steps=8, repeats=1)


def chat_rows(data_shape: str, count: int) -> list[dict[str, Any]]:
    """`count` chat rows whose answers run from the shape's lowest to highest sentence count."""
    low, high = DATA_SHAPES[data_shape]
    sentences = corpus_sentences()
    n = len(sentences)
    rows = []
    for i in range(count):
        k = low + (i * 7) % (high - low + 1)  # 7 is prime to the spans: every length occurs
        answer = " ".join(sentences[(i + 1 + j) % n] for j in range(k))
        rows.append({"messages": [
            {"role": "user", "content": f"Continue after: {sentences[i % n]}"},
            {"role": "assistant", "content": answer}]})
    return rows


# ---------------------------------------------------------------------------------------------
# One cell, in its own process


def _status_kib(field: str) -> int:
    """A memory figure of this process from /proc/self/status (VmHWM: peak RSS; VmRSS: now)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def reset_peak_rss() -> None:
    """Set VmHWM to the current RSS (Linux ≥ 4.0), so a forked cell's peak is its own and not
    the forkserver's import peak."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def run_cell(cell: dict[str, Any]) -> dict[str, Any]:
    """Train one variant in this process; returns its measurements and per-step losses.
    The trainer's log lines go to stderr: stdout is for the one JSON line of `--cell`."""
    reset_peak_rss()
    start_rss = _status_kib("VmRSS")
    with contextlib.redirect_stdout(sys.stderr):
        return _train(cell, start_rss)


def _train(cell: dict[str, Any], start_rss: int) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback, set_seed
    from trl import SFTConfig, SFTTrainer

    from worker.data.batching import (
        ModelShape,
        choose_layout,
        estimated_ratio,
        padding_free_collator,
    )
    from worker.data.length_check import row_lengths
    from worker.training.modeling import count_parameters

    if cell.get("threads"):
        torch.set_num_threads(cell["threads"])
    variant, tuning = cell["variant"], cell["tuning"]
    rows = chat_rows(cell["data"], cell["rows"])
    tokenizer = AutoTokenizer.from_pretrained(cell["model"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    set_seed(SEED)
    model = AutoModelForCausalLM.from_pretrained(cell["model"], dtype=torch.float32)
    if tuning == "lora":
        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear",
                                                 task_type="CAUSAL_LM"))
    trainable, total = count_parameters(model)
    # What the service would decide on these rows (worker/objectives/supervised.py).
    lengths = [min(n, MAX_LENGTH) for n in row_lengths(tokenizer, rows)]
    shape = ModelShape.of(model, parameters=total, trainable=trainable)
    layout = choose_layout("auto", tuning=tuning, lengths=lengths, batch_size=BATCH_SIZE,
                           shape=shape, seed=SEED)

    losses: list[float] = []

    class Losses(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None,
                   **kw: Any) -> None:
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    config = SFTConfig(
        output_dir=str(Path(cell["out"]) / f"{cell['data']}-{tuning}-{variant}"),
        max_steps=cell["steps"], per_device_train_batch_size=BATCH_SIZE,
        learning_rate=LEARNING_RATES[tuning], bf16=False, use_cpu=True, logging_steps=1,
        save_strategy="no", seed=SEED, data_seed=SEED, report_to="none", disable_tqdm=True,
        include_num_input_tokens_seen="non_padding", assistant_only_loss=True,
        max_length=MAX_LENGTH,
        # transformers 5 names it activation_checkpointing (gradient_checkpointing is the
        # deprecated alias trl still defaults to True): off except in its own variant.
        activation_checkpointing=variant == "gradient_checkpointing",
        **({"optim": "adamw_torch"} if variant == "adamw_foreach" else {}))
    trainer = SFTTrainer(
        model=model, args=config, train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer, callbacks=[Losses()],
        data_collator=padding_free_collator(tokenizer) if variant == "padding_free" else None)
    trained_lengths = [len(ids) for ids in trainer.train_dataset["input_ids"]]
    output = trainer.train()
    runtime = output.metrics["train_runtime"]
    tokens = int(trainer.state.num_input_tokens_seen)
    return {
        "data": cell["data"], "tuning": tuning, "variant": variant, "repeat": cell["repeat"],
        "steps": trainer.state.global_step, "train_runtime_s": runtime, "tokens": tokens,
        "tokens_per_s": tokens / runtime, "peak_rss_kib": _status_kib("VmHWM"),
        # What the process held before the cell began (imports; shared pages of the
        # forkserver): the peak's growth above it is the cell's training memory.
        "start_rss_kib": start_rss, "losses": losses,
        "optim": str(getattr(config.optim, "value", config.optim)),
        "activation_checkpointing": config.activation_checkpointing,
        "threads": torch.get_num_threads(),
        "service_layout": layout.as_event(),
        # The cost model on the lengths trl trained on (after its truncation) too.
        "estimated_ratio_trained": estimated_ratio(trained_lengths, BATCH_SIZE, shape,
                                                   seed=SEED),
        "model_shape": asdict(shape),
        "lengths": {"min": min(trained_lengths), "max": max(trained_lengths),
                    "mean": statistics.fmean(trained_lengths),
                    "truncated": sum(n >= MAX_LENGTH for n in trained_lengths)},
    }


def _forked_cell(cell: dict[str, Any], result_path: str) -> None:
    """A forkserver child's entry: the result (or the error) goes to result_path, the
    libraries' progress bars and log lines to a log file beside it."""
    with open(Path(result_path).with_suffix(".log"), "w") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    try:
        result = run_cell(cell)
    except Exception as exc:
        result = {**{k: cell[k] for k in ("data", "tuning", "variant", "repeat")},
                  "error": f"{type(exc).__name__}: {exc}"[:500],
                  "traceback": traceback.format_exc()[-3000:]}
    sys.stdout.flush()
    sys.stderr.flush()
    Path(result_path).write_text(json.dumps(result))


# ---------------------------------------------------------------------------------------------
# The grid


def _cells(settings: Settings, model: Path, out: Path) -> list[dict[str, Any]]:
    forward = [{"data": d, "tuning": t, "variant": v, "steps": settings.steps,
                "rows": settings.rows, "threads": settings.threads, "model": str(model),
                "out": str(out)}
               for d in DATA_SHAPES for t in TUNINGS for v in VARIANTS]
    cells = []
    for repeat in range(settings.repeats):
        # Alternate the order, so drift in the machine's load favours no variant.
        order = forward if repeat % 2 == 0 else list(reversed(forward))
        cells += [{**c, "repeat": repeat} for c in order]
    return cells


def _run_fresh(cell: dict[str, Any]) -> dict[str, Any]:
    result = subprocess.run([sys.executable, "-m", "bench.sft_speed", "--cell", json.dumps(cell)],
                            cwd=REPO, capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["?"])[-1]
        return {**{k: cell[k] for k in ("data", "tuning", "variant", "repeat")},
                "error": last[:500]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def measure(settings: Settings, home: Path) -> list[dict[str, Any]]:
    """Run every cell; returns their results in the order they ran."""
    model = home / "model"
    # Built in a child: the tokenizer's training would otherwise load transformers here.
    subprocess.run([sys.executable, "-c",
                    "import sys; from pathlib import Path; "
                    "from worker.training.tiny_model import build_tiny_model; "
                    f"build_tiny_model(Path(sys.argv[1]), hidden_size={settings.hidden_size}, "
                    f"num_layers={settings.num_layers})", str(model)],
                   cwd=REPO, check=True, capture_output=True, timeout=300)
    cells = _cells(settings, model, home / "out")
    context = multiprocessing.get_context("forkserver")
    # By its importable name: run as `python -m bench.sft_speed`, this module is __main__,
    # which the forkserver does not import, so a target pickled as __main__.x would not load.
    entry = importlib.import_module("bench.sft_speed")._forked_cell
    if not settings.fresh:
        context.set_forkserver_preload(HEAVY_MODULES)
    results = []
    for index, cell in enumerate(cells):
        started = time.monotonic()
        if settings.fresh:
            result = _run_fresh(cell)
        else:
            path = home / f"cell-{index}.json"
            process = context.Process(target=entry, args=(cell, str(path)))
            process.start()
            process.join()
            result = (json.loads(path.read_text()) if path.exists() else
                      {**{k: cell[k] for k in ("data", "tuning", "variant", "repeat")},
                       "error": f"cell process exited with {process.exitcode}"})
        result["wall_s"] = round(time.monotonic() - started, 1)
        print(f"[{index + 1}/{len(cells)}] {cell['data']}/{cell['tuning']}/{cell['variant']} "
              f"#{cell['repeat']}: " + (f"{result['tokens_per_s']:,.0f} tokens/s, peak "
                                        f"{result['peak_rss_kib'] / 1024:,.0f} MiB"
                                        if "error" not in result else result["error"])
              + f" ({result['wall_s']} s)", file=sys.stderr, flush=True)
        results.append(result)
    return results


# ---------------------------------------------------------------------------------------------
# Figures and curves


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per data shape, tuning and variant: median tokens/s and peak RSS, the first repeat's losses,
    and how far the repeats' losses differ from each other (the noise floor of the curves)."""
    summary: dict[str, Any] = {}
    for data in DATA_SHAPES:
        for tuning in TUNINGS:
            for variant in VARIANTS:
                runs = [r for r in results if (r["data"], r["tuning"], r["variant"])
                        == (data, tuning, variant) and "error" not in r]
                errors = [r["error"] for r in results if (r["data"], r["tuning"], r["variant"])
                          == (data, tuning, variant) and "error" in r]
                entry: dict[str, Any] = {"runs": len(runs), "errors": errors}
                if runs:
                    runs.sort(key=lambda r: r["repeat"])
                    entry.update(
                        tokens_per_s=_median([r["tokens_per_s"] for r in runs]),
                        tokens_per_s_runs=[round(r["tokens_per_s"], 1) for r in runs],
                        peak_rss_mib=_median([r["peak_rss_kib"] / 1024 for r in runs]),
                        rss_growth_mib=_median([(r["peak_rss_kib"] - r["start_rss_kib"]) / 1024
                                                for r in runs]),
                        tokens=runs[0]["tokens"], losses=runs[0]["losses"],
                        repeat_loss_spread=max((_max_diff(runs[0]["losses"], r["losses"])
                                                for r in runs[1:]), default=None),
                        service_layout=runs[0]["service_layout"],
                        estimated_ratio_trained=runs[0]["estimated_ratio_trained"],
                        model_shape=runs[0]["model_shape"], lengths=runs[0]["lengths"])
                summary[f"{data}/{tuning}/{variant}"] = entry
    return summary


def _max_diff(a: list[float], b: list[float]) -> float | None:
    if not a or len(a) != len(b):
        return None
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


def _final_mean(losses: list[float]) -> float | None:
    return statistics.fmean(losses[-5:]) if losses else None


def figures(summary: dict[str, Any]) -> tuple[list[Figure], dict[str, Any]]:
    """The table's figures, and the cost model's prediction beside the measurement."""
    out: list[Figure] = []
    cost_model: dict[str, Any] = {}
    for data in DATA_SHAPES:
        for tuning in TUNINGS:
            key = f"{data}/{tuning}"
            base = summary[f"{key}/baseline"]
            if not base["runs"]:
                out.append(Figure(BENCH, f"{key}: baseline", None, "", "", None,
                                  note=f"failed: {'; '.join(base['errors'])[:200]}"))
                continue
            layout = base["service_layout"]
            ratio = layout["estimated_flops_ratio"]
            free = summary[f"{key}/padding_free"]
            measured = (free["tokens_per_s"] / base["tokens_per_s"]
                        if free.get("tokens_per_s") else None)
            predicted = 1 / ratio if ratio else None
            cost_model[key] = {
                "estimated_flops_ratio": ratio, "predicted_speedup": predicted,
                "measured_speedup": measured,
                "estimated_ratio_trained": base["estimated_ratio_trained"],
                "service_picks_padding_free": layout["padding_free"],
                "reason": layout["reason"],
                # Same direction: both say faster, or both say not faster (within 5%).
                "direction_agrees": (None if measured is None or predicted is None else
                                     (predicted > 1.05) == (measured > 1.05)),
            }
            for variant in VARIANTS[1:]:
                v = summary[f"{key}/{variant}"]
                if not v["runs"]:
                    out.append(Figure(BENCH, f"{key}: {variant}", None, "", "", None,
                                      note=f"failed: {'; '.join(v['errors'])[:200]}"))
                    continue
                spread = _max_diff(base["losses"], v["losses"])
                note = ""
                if variant == "padding_free":
                    note = (f"cost model: {ratio:.0%} of padded FLOPs, predicts {predicted:.2f}x"
                            if ratio else "")
                out.append(Figure(BENCH, f"{key}: {variant} tokens/s", v["tokens_per_s"],
                                  "tokens/s", "baseline", base["tokens_per_s"], note))
                out.append(Figure(BENCH, f"{key}: {variant} peak RSS", v["peak_rss_mib"], "MiB",
                                  "baseline", base["peak_rss_mib"],
                                  f"growth during the cell {v['rss_growth_mib']:,.0f} vs "
                                  f"{base['rss_growth_mib']:,.0f} MiB"))
                out.append(Figure(
                    BENCH, f"{key}: {variant} loss, mean of last 5 steps",
                    _final_mean(v["losses"]), "", "baseline", _final_mean(base["losses"]),
                    f"largest per-step Δloss {spread:.2g}" if spread is not None
                    else "loss curves differ in length"))
            picked = "padding_free" if layout["padding_free"] else "baseline"
            service = summary[f"{key}/{picked}"]
            out.append(Figure(BENCH, f"{key}: service tokens/s", service.get("tokens_per_s"),
                              "tokens/s", "baseline", base["tokens_per_s"],
                              f"picks {'padding-free' if layout['padding_free'] else 'padded'}"
                              f" (= the {picked} cell)"))
    return out, cost_model


def _loss(value: float | None) -> str:
    return f"{value:.5f}" if value is not None else "-"


def curves_markdown(summary: dict[str, Any]) -> dict[str, str]:
    """Per data shape and tuning, the variants' per-step losses beside the baseline's (every step up
    to 40 steps, else every k-th step and the last)."""
    tables = {}
    for data in DATA_SHAPES:
        for tuning in TUNINGS:
            key = f"{data}/{tuning}"
            losses = {v: summary[f"{key}/{v}"].get("losses", []) for v in VARIANTS}
            steps = max((len(x) for x in losses.values()), default=0)
            every = max(1, -(-steps // 40))
            shown = sorted({*range(every - 1, steps, every), steps - 1} - {-1})
            lines = [f"Loss per step, {data} rows, {tuning} (lr {LEARNING_RATES[tuning]:g}):",
                     "", "| step | " + " | ".join(VARIANTS) + " |",
                     "|---:|" + "---:|" * len(VARIANTS)]
            for i in shown:
                cells = [_loss(losses[v][i] if i < len(losses[v]) else None) for v in VARIANTS]
                lines.append(f"| {i + 1} | " + " | ".join(cells) + " |")
            tables[key] = "\n".join(lines) + "\n"
    return tables


def cost_model_markdown(cost_model: dict[str, Any]) -> str:
    lines = ["| data/tuning | estimated FLOPs ratio (padding-free ÷ padded) | predicted speed-up "
             "| measured speed-up | service picks | direction agrees |",
             "|---|---:|---:|---:|---|---|"]
    for key, c in cost_model.items():
        def num(x: float | None, fmt: str) -> str:
            return format(x, fmt) if x is not None else "-"
        lines.append(f"| {key} | {num(c['estimated_flops_ratio'], '.3f')} | "
                     f"{num(c['predicted_speedup'], '.2f')}x | {num(c['measured_speedup'], '.2f')}x"
                     f" | {'padding-free' if c['service_picks_padding_free'] else 'padded'} | "
                     f"{c['direction_agrees']} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Entry points


def settings_from(args: Any) -> Settings:
    """Settings from `python -m bench`'s flags (--quick, --torch-threads) or this module's."""
    settings = QUICK if getattr(args, "quick", False) else Settings()
    threads = getattr(args, "torch_threads", None) or getattr(args, "threads", None)
    if threads:
        settings = replace(settings, threads=threads)
    if getattr(args, "steps", None):
        settings = replace(settings, steps=args.steps)
    if getattr(args, "repeats", None):
        settings = replace(settings, repeats=args.repeats)
    if getattr(args, "fresh", False):
        settings = replace(settings, fresh=True)
    return settings


def run(settings: Settings) -> tuple[list[Figure], dict[str, Any]]:
    """Measure every cell; returns the figures and the raw results, curves included."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tunesmith-sft-speed-") as home:
        results = measure(settings, Path(home))
    summary = summarise(results)
    found, cost_model = figures(summary)
    raw = {"settings": asdict(settings), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
           "threads": next((r["threads"] for r in results if "threads" in r), None),
           "cost_model": cost_model, "cost_model_table": cost_model_markdown(cost_model),
           "curves": curves_markdown(summary), "summary": summary, "cells": results,
           "duration_s": round(time.monotonic() - started, 1)}
    return found, raw


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sft_speed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK.steps} steps per cell, one repeat")
    parser.add_argument("--steps", type=int,
                        help=f"training steps per cell (default {Settings.steps})")
    parser.add_argument("--repeats", type=int, help="runs of each cell (default 2)")
    parser.add_argument("--threads", type=int,
                        help="torch threads per cell (default: OMP_NUM_THREADS, else all cores)")
    parser.add_argument("--fresh", action="store_true",
                        help="a new interpreter per cell instead of forkserver children")
    parser.add_argument("--json", type=Path, help="write figures and raw results here")
    parser.add_argument("--cell", help=argparse.SUPPRESS)  # one cell's JSON: run it, print
    args = parser.parse_args()
    if args.cell:
        print(json.dumps(run_cell(json.loads(args.cell))))
        return
    found, raw = run(settings_from(args))
    print(markdown(found))
    print("Cost model (worker.data.batching.estimated_ratio) against measurement:\n")
    print(raw["cost_model_table"])
    for table in raw["curves"].values():
        print(table)
    print(f"{raw['duration_s']:.0f} s, settings {raw['settings']}, "
          f"OMP_NUM_THREADS={raw['omp_num_threads']}, torch threads {raw['threads']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"figures": [asdict(f) for f in found], "raw": raw},
                                        indent=2, default=str))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
