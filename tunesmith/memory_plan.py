"""Choose the micro-batch and activation checkpointing that fit a device, fastest first.

Torch-free, like the estimate it ranks (tunesmith/memory_estimate.py). Splitting a batch into
micro-batches keeps the effective batch (gradient accumulation makes up the rest), so the
optimisation is the same; only speed and memory change.
"""

from dataclasses import dataclass, replace

from tunesmith.memory_estimate import GIB, Estimate, ModelShape, TrainingSetup, estimate

# Below about 4k tokens a forward pass stops filling a GPU's matmuls, and each further
# halving costs more than checkpointing's recomputation (17-28 % a step, bench/sft_speed.py).
MIN_TOKENS_PER_PASS = 4096


@dataclass(frozen=True)
class MemoryPlan:
    micro_batch: int  # rows per forward pass, per device
    split: int  # batch / micro_batch: the factor gradient accumulation grows by
    checkpointing: bool
    estimate: Estimate
    free_bytes: int | None
    reason: str

    def as_event(self) -> dict[str, object]:
        return {"micro_batch_size": self.micro_batch, "accumulation_factor": self.split,
                "gradient_checkpointing": self.checkpointing, "reason": self.reason,
                "free_gib": None if self.free_bytes is None
                else round(self.free_bytes / GIB, 2),
                **self.estimate.as_gib()}


def micro_batches(batch: int, min_halvings: int) -> list[int]:
    """batch, then about half of it, ..., down to 1: each a divisor of batch, so the
    effective batch stays exact. `min_halvings` skips the first ones (after an OOM)."""
    divisors = [d for d in range(batch, 0, -1) if batch % d == 0]
    sizes: list[int] = []
    target = float(batch)
    while True:
        size = max(d for d in divisors if d <= target)
        if not sizes or size < sizes[-1]:
            sizes.append(size)
        if size == 1:
            break
        target = size / 2
    return sizes[min(min_halvings, len(sizes) - 1):]


def choose(shape: ModelShape, setup: TrainingSetup, *, batch: int, free_bytes: int | None,
           checkpointing: bool | None, supports_checkpointing: bool, lean: bool = False,
           min_halvings: int = 0) -> MemoryPlan:
    """The fastest (micro-batch, checkpointing) whose estimate fits `free_bytes` (None: no
    limit). `checkpointing` None lets the plan decide; `lean` (QLoRA, where memory is why
    it was picked) prefers checkpointing on. Nothing fits: the leanest, said so."""
    sizes = micro_batches(batch, min_halvings)
    if checkpointing is not None or not supports_checkpointing:
        options = [(bool(checkpointing) and supports_checkpointing, m) for m in sizes]
    else:
        saturating = [m for m in sizes if m * setup.seq_len >= MIN_TOKENS_PER_PASS] or sizes[:1]
        small = [m for m in sizes if m not in saturating]
        if lean:
            options = [(True, m) for m in sizes] + [(False, m) for m in sizes]
        else:
            options = ([(False, m) for m in saturating] + [(True, m) for m in sizes]
                       + [(False, m) for m in small])

    def estimate_for(ckpt: bool, micro: int) -> Estimate:
        return estimate(shape, replace(setup, micro_batch=micro, checkpointing=ckpt))

    for ckpt, micro in options:
        found = estimate_for(ckpt, micro)
        if found.fits(free_bytes):
            return MemoryPlan(micro, batch // micro, ckpt, found, free_bytes,
                              _why(ckpt, micro, batch, free_bytes, lean, checkpointing))
    ckpt, micro = min(options, key=lambda o: estimate_for(*o).peak_allocated)
    return MemoryPlan(micro, batch // micro, ckpt, estimate_for(ckpt, micro), free_bytes,
                      "nothing is estimated to fit the free memory; the leanest setup is used")


def _why(ckpt: bool, micro: int, batch: int, free_bytes: int | None, lean: bool,
         asked: bool | None) -> str:
    if free_bytes is None:
        where = "no memory limit on this device"
    else:
        where = f"fits {free_bytes / GIB:.1f} GiB free"
    parts = [where]
    if asked is not None:
        parts.append("activation checkpointing as asked")
    elif lean:
        parts.append("QLoRA: the leanest setup (activation checkpointing on)")
    elif ckpt:
        parts.append("activation checkpointing: no faster setup fits")
    if micro < batch:
        parts.append(f"batch {batch} split into micro-batches of {micro}")
    return "; ".join(parts)
