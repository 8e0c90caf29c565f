"""GPU training speed per tuning: tokens/s, MFU and peak memory of a ~1B-parameter Llama.

The model is built from a config (TinyLlama-1.1B's shape) with random weights, saved once,
and loaded for each cell through the service's own path (worker.training.modeling.load_model, then
the tuning's registered plan: quantisation for qlora, peft wrapping for the others). Each
tuning trains with two SFTConfigs on the same data:

- service: what the service resolves for the job
  (worker.training.workflow.trainer_arguments with the
  resolved hyperparameters: bf16 where supported, gradient checkpointing only above 3B),
- trl defaults: SFTConfig() as trl ships it (bf16, gradient checkpointing on, ...),

with only batch size, sequence length and steps fixed alike, and checkpoint saving off.
Every cell runs in a subprocess of its own, so peak memory is the cell's and a crash (prefix
tuning with gradient checkpointing) costs one cell.

    python -m bench.gpu_tunings --json bench/results/gpu_tunings.json   # on a CUDA machine
    python -m bench.gpu_tunings --tiny --device cpu                     # checks the code paths

MFU counts model FLOPs per token as 2N (forward) + 2N (backward to activations) + 2N_trainable
(weight gradients) + 12·L·T·d (attention, PaLM's estimate), recomputation not counted.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TUNINGS = ("full", "lora", "qlora", "prefix", "prompt")
CONFIGS = ("service", "trl_defaults")
MODEL_NAME = "bench-1b"
BENCH = "gpu_tunings"
# Dense bf16 peak FLOP/s by device name fragment (vendor datasheets, SXM parts).
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12,
             "A10G": 125e12, "A10": 125e12, "RTX 4090": 165e12}


@dataclass(frozen=True)
class Shape:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    seq_len: int
    batch: int
    warmup: int
    steps: int


ONE_B = Shape(hidden=2048, intermediate=5632, layers=22, heads=32, kv_heads=4, vocab=32000,
              seq_len=1024, batch=8, warmup=3, steps=10)
TINY = Shape(hidden=64, intermediate=128, layers=2, heads=4, kv_heads=2, vocab=1000,
             seq_len=64, batch=2, warmup=1, steps=2)


def build_model(folder: Path, shape: Shape, device: str) -> int:
    """Save a random Llama of this shape (bf16 on CUDA) and a tokenizer; returns parameters."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from worker.training.tiny_model import build_tokenizer

    tokenizer = build_tokenizer()
    config = LlamaConfig(
        vocab_size=shape.vocab, hidden_size=shape.hidden, intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads, max_position_embeddings=max(2048, shape.seq_len),
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False)
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config)
    if device == "cuda":
        model = model.to(torch.bfloat16)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def run_cell(tuning_name: str, config_name: str, shape: Shape, device: str,
             parameters: int) -> dict[str, Any]:
    """One tuning with one SFTConfig, in this process; returns its measurements."""
    import dataclasses

    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from tunesmith.spec.hyperparameters import Hyperparameters
    from tunesmith.spec.job import JobSpec
    from worker.registry import tuning as tuning_plan
    from worker.training.context import JobContext
    from worker.training.modeling import load_model, load_tokenizer
    from worker.training.workflow import setup, trainer_arguments

    class BenchContext(JobContext):
        """A job with no database row: what would be events are kept in memory."""

        def event(self, message: str, **kwargs: Any) -> None:
            self.__dict__.setdefault("messages", []).append(message)

        def record_hyperparameters(self, values: dict[str, Any]) -> None:
            pass

    spec = JobSpec.model_validate({"model": MODEL_NAME, "training_file": "file-bench",
                                   "tuning": {"type": tuning_name}})
    ctx = BenchContext(job_id=f"gpu-{tuning_name}-{config_name}", spec=spec, device=device,
                       seed=0)
    total_steps = shape.warmup + shape.steps
    rows = shape.batch * total_steps
    hp = Hyperparameters(batch_size=shape.batch, max_steps=total_steps,
                         max_seq_length=shape.seq_len)
    job = setup(ctx, hp, rows=rows, model_max_length=shape.seq_len, model_parameters=parameters)
    tokenizer = load_tokenizer(ctx)
    model = load_model(ctx, job.plan, precision=job.hp.precision)
    model = tuning_plan(type(spec.tuning)).apply(model, spec.tuning, "causal_lm", ctx)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(10, shape.vocab, (rows, shape.seq_len), generator=generator)
    data = Dataset.from_dict({"input_ids": ids.tolist()})
    common = {"max_steps": total_steps, "per_device_train_batch_size": shape.batch,
              "max_length": shape.seq_len, "save_strategy": "no", "report_to": "none",
              "disable_tqdm": True, "use_cpu": device == "cpu"}
    if config_name == "service":
        args = trainer_arguments(ctx, job.hp, SFTConfig, max_length=shape.seq_len)
        args = dataclasses.replace(args, save_strategy="no")
    else:
        args = SFTConfig(output_dir=str(ctx.checkpoints_dir), **common,
                         **({"bf16": False} if device == "cpu" else {}))

    step_seconds: list[float] = []

    class StepClock(TrainerCallback):
        def on_step_begin(self, *a: Any, **k: Any) -> None:
            if device == "cuda":
                torch.cuda.synchronize()
            self.started = time.perf_counter()

        def on_step_end(self, *a: Any, **k: Any) -> None:
            if device == "cuda":
                torch.cuda.synchronize()
            step_seconds.append(time.perf_counter() - self.started)

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer,
                         callbacks=[StepClock()])
    trainer.train()
    measured = sorted(step_seconds[shape.warmup:])
    step = measured[len(measured) // 2]
    tokens_per_second = shape.batch * shape.seq_len / step
    flops_per_token = (4 * parameters + 2 * trainable
                       + 12 * shape.layers * shape.seq_len * shape.hidden)
    peak = next((v for k, v in PEAK_BF16.items()
                 if device == "cuda" and k in torch.cuda.get_device_name()), None)
    return {
        "tuning": tuning_name, "config": config_name, "tokens_per_second": tokens_per_second,
        "median_step_s": step, "steps_timed": len(measured),
        "mfu": flops_per_token * tokens_per_second / peak if peak else None,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30
        if device == "cuda" else None,
        "trainable_parameters": trainable, "parameters": parameters,
        "bf16": args.bf16, "gradient_checkpointing": args.gradient_checkpointing,
        "liger_kernels": bool(getattr(args, "use_liger_kernel", False)),
        "device_name": torch.cuda.get_device_name() if device == "cuda" else "cpu",
    }


def run_all(shape: Shape, device: str, out: Path, tunings: tuple[str, ...]) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="tunesmith-gpu-bench-"))
    try:
        return _run_cells(home, shape, device, out, tunings)
    finally:
        shutil.rmtree(home, ignore_errors=True)  # the 1B model folder alone is ~2 GB


def _run_cells(home: Path, shape: Shape, device: str, out: Path,
               tunings: tuple[str, ...]) -> dict[str, Any]:
    env = {**os.environ, "TUNESMITH_HOME": str(home)}
    os.environ.update(env)
    parameters = build_model(home / "models" / MODEL_NAME, shape, device)
    cells = []
    for tuning_name in tunings:
        for config_name in CONFIGS:
            part = home / f"{tuning_name}-{config_name}.json"
            command = [sys.executable, "-m", "bench.gpu_tunings", "--cell",
                       f"{tuning_name}:{config_name}", "--device", device, "--parameters",
                       str(parameters), "--json", str(part)] + (
                           ["--tiny"] if shape == TINY else [])
            started = time.monotonic()
            result = subprocess.run(command, env=env, capture_output=True, text=True,
                                    timeout=1800, cwd=Path(__file__).resolve().parents[1])
            if result.returncode == 0:
                cell = json.loads(part.read_text())
            else:
                last = (result.stderr.strip().splitlines() or ["?"])[-1]
                cell = {"tuning": tuning_name, "config": config_name, "error": last[:300]}
            cell["wall_s"] = round(time.monotonic() - started, 1)
            print(json.dumps(cell), flush=True)
            cells.append(cell)
    report = {"shape": shape.__dict__, "device": device, "parameters": parameters,
              "cells": cells}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    return report


def not_run_figures(reason: str) -> list[Any]:
    from bench.report import Figure

    return [Figure(BENCH, f"tokens/s, MFU, peak memory per tuning ({', '.join(TUNINGS)}), "
                   "~1B Llama", None, "", "trl's default SFTConfig", None, note=reason)]


def figures_from_file(path: Path) -> tuple[list[Any], dict[str, Any]]:
    from bench.report import Figure

    report = json.loads(path.read_text())
    cells = {(c["tuning"], c["config"]): c for c in report["cells"]}
    out = []
    for tuning_name in TUNINGS:
        ours, theirs = cells.get((tuning_name, "service")), cells.get((tuning_name,
                                                                       "trl_defaults"))
        if ours is None or theirs is None:
            continue
        note = "; ".join(f"{name}: {c['error']}" for name, c in (("service", ours),
                                                                 ("trl defaults", theirs))
                         if "error" in c)
        for key, label, unit in (("tokens_per_second", "tokens/s", "tokens/s"),
                                 ("mfu", "MFU", ""), ("peak_memory_gib", "peak memory", "GiB")):
            out.append(Figure(BENCH, f"{tuning_name}: {label}", ours.get(key), unit,
                              "trl defaults", theirs.get(key), note))
    return out, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, default=Path("bench/results/gpu_tunings.json"))
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--tiny", action="store_true", help="a tiny model, to test the script")
    parser.add_argument("--quick", action="store_true", help="fewer timed steps")
    parser.add_argument("--tunings", default=",".join(TUNINGS))
    parser.add_argument("--cell", help=argparse.SUPPRESS)  # TUNING:CONFIG, in a subprocess
    parser.add_argument("--parameters", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    shape = TINY if args.tiny else ONE_B
    if args.quick and not args.tiny:
        shape = Shape(**{**shape.__dict__, "steps": 4})
    if args.cell:
        tuning_name, config_name = args.cell.split(":")
        result = run_cell(tuning_name, config_name, shape, args.device, args.parameters)
        args.json.write_text(json.dumps(result))
        return
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("not run: no CUDA device")
            return
    run_all(shape, args.device, args.json, tuple(args.tunings.split(",")))


if __name__ == "__main__":
    main()
