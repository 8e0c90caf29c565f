"""Token counts of a raw-text corpus as trl's SFTTrainer sees it, and what packing makes of it.

trl ends every text row with EOS (unless it already ends so) and tokenizes it with the
tokenizer's own special tokens; counting the same way lets a pretraining job report how many
tokens it trains per epoch, and the steps an epoch of packed blocks takes.
"""

import math
from collections.abc import Sequence
from typing import Any

# `datasets.Dataset.map(batched=True)` hands trl's "wrapped" packer this many rows at a time;
# each batch is cut into blocks on its own, so each ends in one partial block.
PACKING_BATCH_ROWS = 1000


def with_eos(text: str, tokenizer: Any) -> str:
    eos = tokenizer.eos_token
    return text if text.endswith(eos) else text + eos


def token_lengths(texts: Sequence[str], tokenizer: Any) -> list[int]:
    """Tokens per row, EOS included, as trl tokenizes a `text` row."""
    lengths: list[int] = []
    for start in range(0, len(texts), PACKING_BATCH_ROWS):
        batch = [with_eos(t, tokenizer) for t in texts[start:start + PACKING_BATCH_ROWS]]
        lengths += [len(ids) for ids in tokenizer(text=batch).input_ids]
    return lengths


def wrapped_block_count(lengths: Sequence[int], block: int) -> int:
    """How many sequences trl's "wrapped" packing cuts these rows into at `block` tokens."""
    return sum(math.ceil(sum(lengths[start:start + PACKING_BATCH_ROWS]) / block)
               for start in range(0, len(lengths), PACKING_BATCH_ROWS))
