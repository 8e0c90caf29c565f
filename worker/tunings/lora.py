"""LoRA: peft's LoraConfig on every linear layer by default; the artifact is a PEFT folder."""

from pathlib import Path
from typing import Any

from peft import LoraConfig, TaskType, get_peft_model

from tunesmith.spec.tunings import LoraTuning
from worker.registry import ModelTask, TuningPlan, register_tuning
from worker.training.context import JobContext


def lora_config(tuning: LoraTuning, task: ModelTask) -> LoraConfig:
    return LoraConfig(
        r=tuning.r, lora_alpha=tuning.alpha, lora_dropout=tuning.dropout,
        target_modules=tuning.target_modules, use_rslora=tuning.use_rslora,
        use_dora=tuning.use_dora, bias="none",
        task_type=TaskType.SEQ_CLS if task == "seq_cls" else TaskType.CAUSAL_LM,
    )


def apply(model: Any, tuning: LoraTuning, task: ModelTask, ctx: JobContext) -> Any:
    return get_peft_model(model, lora_config(tuning, task))


def save_peft(model: Any, tokenizer: Any, folder: Path, task: ModelTask,
              ctx: JobContext) -> str:
    """`PeftModel.from_pretrained(base, folder)` loads this folder as it is."""
    model.save_pretrained(folder, safe_serialization=True)
    return "peft_adapter"


register_tuning(TuningPlan(spec=LoraTuning, apply=apply, save=save_peft))
