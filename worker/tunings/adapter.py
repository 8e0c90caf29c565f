"""Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2020) via worker/tunings/bottleneck.py.

peft has no bottleneck tuner, so the artifact is our own small format: the adapter weights in
`adapter_model.safetensors`, their settings in `bottleneck_config.json`, the tokenizer, and a
README that shows the one-call loader:

    from worker.tunings.bottleneck import load_bottleneck_adapters
    model = load_bottleneck_adapters("path/or/hub-id/of/the/base", "adapter")
"""

from pathlib import Path
from typing import Any

from tunesmith.spec.tunings import AdapterTuning
from worker.registry import ModelTask, TuningPlan, register_tuning
from worker.training.context import JobContext
from worker.tunings.bottleneck import (
    ADAPTER_NAME,
    CONFIG_NAME,
    WEIGHTS_NAME,
    BottleneckConfig,
    add_bottleneck_adapters,
    save_bottleneck_adapters,
)

README = """# Bottleneck adapters ({placement}, size {size})

Trained by Tunesmith on `{model}`. peft has no bottleneck-adapter type, so this folder holds
`{weights}` (the adapter weights only), `{config}` (their settings) and the tokenizer.
Load them onto the base model with one call (the `tunesmith[worker]` package):

```python
from worker.tunings.bottleneck import load_bottleneck_adapters

model = load_bottleneck_adapters("<path or hub id of {model}>", "<this folder>")
# or onto a base you loaded yourself: load_bottleneck_adapters(base_model, "<this folder>")
```
"""


def bottleneck_config(tuning: AdapterTuning) -> BottleneckConfig:
    return BottleneckConfig(size=tuning.size, placement=tuning.placement,
                            nonlinearity=tuning.nonlinearity, dropout=tuning.dropout)


def apply(model: Any, tuning: AdapterTuning, task: ModelTask, ctx: JobContext) -> Any:
    if task != "causal_lm":
        # The spec allows adapters with causal-LM objectives only; a head would need saving too.
        raise ValueError(f"adapter tuning trains causal language models, not {task!r} models")
    add_bottleneck_adapters(model, bottleneck_config(tuning))
    # Train the adapters in fp32 on a half-precision base, as peft does with LoRA weights:
    # bf16 weights lose small Adam updates. The adapter casts its input and output itself.
    for name, module in model.named_modules():
        if name.endswith(ADAPTER_NAME):
            module.float()
    if getattr(model, "is_quantized", False):
        # On a quantised base (worker/training/quantization.py has frozen it): transformers' Trainer
        # refuses a quantised model that carries no *peft* adapter as "purely quantized",
        # to stop training integer weights. Only these adapters train, so it may go ahead.
        model.is_quantized = False
    return model


def save(model: Any, tokenizer: Any, folder: Path, task: ModelTask, ctx: JobContext) -> str:
    tuning = ctx.spec.tuning
    assert isinstance(tuning, AdapterTuning)
    save_bottleneck_adapters(model, folder, bottleneck_config(tuning),
                             base_model_name=ctx.spec.model)
    (folder / "README.md").write_text(README.format(
        placement=tuning.placement, size=tuning.size, model=ctx.spec.model,
        weights=WEIGHTS_NAME, config=CONFIG_NAME))
    return "bottleneck_adapter"


register_tuning(TuningPlan(spec=AdapterTuning, apply=apply, save=save))
