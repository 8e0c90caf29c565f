"""Peak GPU memory of tunings on a 4-bit base, measured against the dry run's estimate.

A ~1B Llama (TinyLlama-1.1B's shape, random bf16 weights, bench/gpu_tunings.build_model)
trains a few SFT steps through the service's own path (worker.training.workflow.setup, the tuning's
plan on the quantised base, worker.training.workflow.trainer_arguments: paged AdamW, bf16) in two
cells, each a subprocess of its own so its peak is its own:

- lora on bnb_nf4 (QLoRA's setup, `quantization: {"method": "bnb_nf4"}`),
- bottleneck adapters on bnb_nf4 (`tuning: {"type": "adapter"}` on the same base),

and prints `torch.cuda.max_memory_allocated` beside tunesmith/memory_estimate.py's
`peak_allocated` for the same shape and setup (the estimate the dry run and the worker's
memory plan use), with their ratio.

    python -m bench.gpu_quantized                # on a CUDA machine, well under a minute
    python -m bench.gpu_quantized --tiny         # a tiny model on the CPU: checks the paths

On the CPU there is no allocator peak to read (bitsandbytes quantises on the CPU too), so
--tiny prints the estimate and the loss only.
"""

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.gpu_tunings import MODEL_NAME, ONE_B, TINY, Shape, build_model

CELLS = {"lora+bnb_nf4": {"tuning": {"type": "lora"}, "quantization": {"method": "bnb_nf4"}},
         "adapter+bnb_nf4": {"tuning": {"type": "adapter"},
                             "quantization": {"method": "bnb_nf4"}}}
# Short: the peak is reached in the first step (optimizer state is created there).
ONE_B_QUICK = dataclasses.replace(ONE_B, seq_len=512, batch=4, warmup=1, steps=3)


def run_cell(name: str, shape: Shape, device: str, parameters: int) -> dict[str, Any]:
    """One cell in this process; returns its measurements and the estimate."""
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from tunesmith.dry_run import training_setup
    from tunesmith.memory_estimate import GIB, ModelShape, estimate
    from tunesmith.model_names import resolve_model
    from tunesmith.spec.hyperparameters import Hyperparameters
    from tunesmith.spec.job import JobSpec
    from worker.training.context import JobContext
    from worker.training.modeling import load_model, load_tokenizer
    from worker.training.quantization import is_quantized
    from worker.training.workflow import setup, trainer_arguments

    class BenchContext(JobContext):
        """A job with no database row: what would be events are kept in memory."""

        def event(self, message: str, **kwargs: Any) -> None:
            self.__dict__.setdefault("messages", []).append(message)

        def update_job(self, **values: Any) -> None:
            pass

    spec = JobSpec.model_validate({"model": MODEL_NAME, "training_file": "file-bench",
                                   **CELLS[name]})
    ctx = BenchContext(job_id=f"gpu-quantized-{name}", spec=spec, device=device, seed=0)
    total_steps = shape.warmup + shape.steps
    rows = shape.batch * total_steps
    hp = Hyperparameters(batch_size=shape.batch, max_steps=total_steps,
                         max_seq_length=shape.seq_len)
    job = setup(ctx, hp, rows=rows, model_max_length=shape.seq_len, model_parameters=parameters)
    tokenizer = load_tokenizer(ctx)
    model = load_model(ctx, job.plan, spec.tuning, precision=job.hp.precision)
    model = job.plan.apply(model, spec.tuning, "causal_lm", ctx)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(10, shape.vocab, (rows, shape.seq_len), generator=generator)
    args = dataclasses.replace(trainer_arguments(ctx, job.hp, SFTConfig,
                                                 max_length=shape.seq_len),
                               save_strategy="no", report_to="none", disable_tqdm=True)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer = SFTTrainer(model=model, args=args, processing_class=tokenizer,
                         train_dataset=Dataset.from_dict({"input_ids": ids.tolist()}))
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]

    config = json.loads((Path(resolve_model(MODEL_NAME).path_or_id) / "config.json").read_text())
    # The estimate for what ran: the dry run's view of the tuning with the trainer's own
    # micro batch, sequence length, checkpointing and precision.
    setup_used = dataclasses.replace(
        training_setup(spec, device), micro_batch=args.per_device_train_batch_size,
        seq_len=shape.seq_len, checkpointing=bool(args.gradient_checkpointing),
        precision="bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
        paged_optimizer=is_quantized(ctx) and device == "cuda")
    predicted = estimate(ModelShape.from_config(config), setup_used)
    measured = torch.cuda.max_memory_allocated() if device == "cuda" else None
    return {
        "cell": name, "optim": str(getattr(args.optim, "value", args.optim)), "bf16": args.bf16,
        "gradient_checkpointing": bool(args.gradient_checkpointing),
        "micro_batch": args.per_device_train_batch_size, "seq_len": shape.seq_len,
        "steps": total_steps, "train_s": round(seconds, 1),
        "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
        "measured_peak_gib": round(measured / GIB, 3) if measured is not None else None,
        "estimated_peak_gib": round(predicted.peak_allocated / GIB, 3),
        "estimate_over_measured": round(predicted.peak_allocated / measured, 3)
        if measured else None,
        "estimate": predicted.as_gib(),
        "service_plan": job.hp.memory.estimate.as_gib()
        if getattr(job.hp, "memory", None) is not None else None,
        "device_name": torch.cuda.get_device_name() if device == "cuda" else "cpu",
    }


def run_all(shape: Shape, device: str, cells: list[str], out: Path | None) -> list[Any]:
    home = Path(tempfile.mkdtemp(prefix="tunesmith-gpu-quantized-"))
    try:
        env = {**os.environ, "TUNESMITH_HOME": str(home)}
        os.environ.update(env)
        parameters = build_model(home / "models" / MODEL_NAME, shape, device)
        results = []
        for name in cells:
            part = home / f"{name}.json"
            command = [sys.executable, "-m", "bench.gpu_quantized", "--cell", name,
                       "--device", device, "--parameters", str(parameters),
                       "--json", str(part)] + (["--tiny"] if shape == TINY else [])
            started = time.monotonic()
            done = subprocess.run(command, env=env, capture_output=True, text=True,
                                  timeout=600, cwd=Path(__file__).resolve().parents[1])
            if done.returncode == 0:
                result = json.loads(part.read_text())
            else:
                last = (done.stderr.strip().splitlines() or ["?"])[-1]
                result = {"cell": name, "error": last[:400]}
            result["wall_s"] = round(time.monotonic() - started, 1)
            print(json.dumps(result), flush=True)
            results.append(result)
        for r in results:
            if "error" not in r:
                measured = (f"measured {r['measured_peak_gib']} GiB, " if device == "cuda"
                            else "")
                print(f"{r['cell']:>16}: {measured}estimated {r['estimated_peak_gib']} GiB "
                      f"(estimate/measured {r['estimate_over_measured']}), loss "
                      f"{r['loss_first']:.3f} -> {r['loss_last']:.3f}, {r['optim']}")
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps({"shape": shape.__dict__, "device": device,
                                       "parameters": parameters, "cells": results}, indent=2))
        return results
    finally:
        shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--tiny", action="store_true",
                        help="a tiny model on the CPU, to test the script")
    parser.add_argument("--cells", default=",".join(CELLS))
    parser.add_argument("--cell", help=argparse.SUPPRESS)  # one cell, in a subprocess
    parser.add_argument("--device", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--parameters", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    shape = TINY if args.tiny else ONE_B_QUICK
    device = args.device or ("cpu" if args.tiny else "cuda")
    if args.cell:
        args.json.write_text(json.dumps(run_cell(args.cell, shape, device, args.parameters)))
        return
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("not run: no CUDA device (--tiny runs a tiny model on the CPU)")
            return
    results = run_all(shape, device, args.cells.split(","), args.json)
    if any("error" in r for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
