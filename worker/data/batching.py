"""How supervised rows become batches: padded to the batch's longest row, or padding-free.

Padding-free concatenates a batch's rows into one sequence; each row keeps its own
position ids, and transformers (5.x, `masking_utils.find_packed_sequence_indices`) turns
restarting positions into a block-diagonal causal mask, so no row sees another. The loss is
the same as with padding (the same tokens, the same labels: `bench/sft_speed.py` shows
both curves), and no compute goes to pad tokens. The price: with SDPA, the attention of the
joined sequence is one dense (Σ lengths)² matrix rather than B matrices of (longest)², so
for long rows it can cost more than the padding it saves. `choose_layout` weighs the two
with a FLOPs estimate on the job's own row lengths.

Prompt-learning tunings (prompt, p_tuning, prefix, p_tuning_v2) put virtual tokens or a
prefix cache in front of every row of the batch; joined into one row they would get them
once. Those tunings always train on padded batches.
"""

import random
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from tunesmith.spec.tunings import PROMPT_LEARNING

# Padding-free only where it saves at least this share of a step's estimated FLOPs: the
# estimate leaves out the mask building and the kernels' efficiency at other shapes.
MIN_SAVING = 0.10


@dataclass(frozen=True)
class ModelShape:
    parameters: int
    trainable: int
    layers: int
    hidden: int

    @classmethod
    def of(cls, model: Any, *, parameters: int, trainable: int) -> "ModelShape":
        config = model.config.get_text_config()
        return cls(parameters=parameters, trainable=trainable,
                   layers=config.num_hidden_layers, hidden=config.hidden_size)


def step_flops(lengths: list[int], shape: ModelShape, *, padding_free: bool) -> float:
    """Training FLOPs of one batch: forward + backward through the weights for every token
    the model sees (4N, plus 2N for trainable weights' gradients), and attention at PaLM's
    12 · layers · hidden per query-key pair over the matrices SDPA computes."""
    per_token = 4 * shape.parameters + 2 * shape.trainable
    attention = 12 * shape.layers * shape.hidden
    if padding_free:
        total = sum(lengths)
        return per_token * total + attention * total * total
    longest = max(lengths)
    return len(lengths) * (per_token * longest + attention * longest * longest)


class BatchLayout(NamedTuple):
    padding_free: bool
    reason: str
    # Estimated FLOPs of padding-free batches ÷ padded ones over the job's rows.
    flops_ratio: float | None = None

    def as_event(self) -> dict[str, Any]:
        event = self._asdict()
        event["estimated_flops_ratio"] = event.pop("flops_ratio")  # the name events document
        return event


def estimated_ratio(lengths: list[int], batch_size: int, shape: ModelShape,
                    *, seed: int = 0) -> float:
    """Padding-free ÷ padded FLOPs over one shuffled epoch of the job's rows, in its batches."""
    order = list(lengths)
    random.Random(seed).shuffle(order)
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    free = sum(step_flops(b, shape, padding_free=True) for b in batches)
    padded = sum(step_flops(b, shape, padding_free=False) for b in batches)
    return free / padded


def choose_layout(setting: bool | Literal["auto"], *, tuning: str, lengths: list[int],
                  batch_size: int, shape: ModelShape, seed: int = 0) -> BatchLayout:
    if tuning in PROMPT_LEARNING:
        return BatchLayout(False, f"{tuning} tuning adds virtual tokens to every row")
    if setting is False:
        return BatchLayout(False, "padding_free is false in the job")
    ratio = estimated_ratio(lengths, batch_size, shape, seed=seed) if lengths else 1.0
    if setting is True:
        return BatchLayout(True, "padding_free is true in the job", ratio)
    if batch_size < 2:
        return BatchLayout(False, "one row per batch has no padding to remove", ratio)
    if ratio <= 1 - MIN_SAVING:
        return BatchLayout(True, f"padding-free batches need ~{ratio:.0%} of the padded "
                                 "ones' compute on these rows", ratio)
    return BatchLayout(False, f"padding-free batches would need ~{ratio:.0%} of the padded "
                              "ones' compute on these rows (long rows: the joined attention "
                              "costs what the padding saves)", ratio)


def padding_free_collator(tokenizer: Any) -> Any:
    """trl's own collator in padding-free mode, for rows SFTTrainer tokenised and truncated.

    Given to SFTTrainer as `data_collator` rather than through `SFTConfig.padding_free`,
    which (trl 1.16) refuses a `max_length` without packing although truncation happens
    while the dataset is prepared, before any collator runs.
    """
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    return DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id,
                                           padding_free=True)
