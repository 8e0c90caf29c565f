"""The baseline of the overhead benchmark: LoRA SFT as a user would script it with trl and
peft alone, with no service around it. Run as a subprocess:

    python -m bench.bare_sft --model DIR --data FILE.jsonl --settings SETTINGS.json --out DIR

SETTINGS holds the job's `resolved_hyperparameters`, its `tuning` and its seed, so the
trainer gets the same SFTConfig values the service gave its own. The script prints one JSON
line of timings (wall clock, `time.time()`) and results, and writes it to OUT/result.json.
"""

import time

STARTED = time.time()  # before the heavy imports: they are part of the cold start

import argparse  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402


def peak_rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--settings", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    settings = json.loads(Path(args.settings).read_text())
    hp, tuning, seed = settings["hyperparameters"], settings["tuning"], settings["seed"]
    times: dict[str, float] = {"started": STARTED}

    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback, set_seed
    from trl import SFTConfig, SFTTrainer

    times["imported"] = time.time()

    class Clock(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            times["train_begin"] = time.time()

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None,
                   **kw: Any) -> None:
            times.setdefault("first_step", time.time())
            if state.global_step >= state.max_steps:
                times.setdefault("last_step", time.time())

    rows = [json.loads(line) for line in Path(args.data).read_text().splitlines() if line]
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    set_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(
        r=tuning["r"], lora_alpha=tuning["alpha"], lora_dropout=tuning["dropout"],
        target_modules=tuning["target_modules"], bias="none", task_type="CAUSAL_LM"))
    times["model_loaded"] = time.time()
    out = Path(args.out)
    config = SFTConfig(
        output_dir=str(out / "checkpoints"), max_steps=hp["max_steps"],
        num_train_epochs=hp["n_epochs"], per_device_train_batch_size=hp["batch_size"],
        gradient_accumulation_steps=hp["gradient_accumulation_steps"],
        learning_rate=hp["learning_rate"], weight_decay=hp["weight_decay"],
        lr_scheduler_type=hp["lr_scheduler"], warmup_steps=hp["warmup_ratio"],
        bf16=False, fp16=False, activation_checkpointing=hp["gradient_checkpointing"],
        use_cpu=True, logging_steps=hp["logging_steps"], logging_first_step=True,
        save_strategy="steps", save_steps=hp["save_steps"], save_total_limit=2,
        seed=seed, data_seed=seed, report_to="none", disable_tqdm=True,
        include_num_input_tokens_seen="non_padding", max_length=hp["max_seq_length"],
        # Chat rows on a template with {% generation %} markers: the service trains on the
        # assistant turns only, and so does this.
        assistant_only_loss=True,
    )
    trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows),
                         processing_class=tokenizer, callbacks=[Clock()])
    output = trainer.train()
    times["train_end"] = time.time()
    model.save_pretrained(out / "adapter", safe_serialization=True)
    tokenizer.save_pretrained(out / "adapter")
    times["saved"] = time.time()
    result = {
        "times": times, "train_runtime": output.metrics["train_runtime"],
        "train_loss": output.metrics["train_loss"],
        "tokens": trainer.state.num_input_tokens_seen, "steps": trainer.state.global_step,
        "peak_rss_kib": peak_rss_kib(),
    }
    (out / "result.json").write_text(json.dumps(result))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
