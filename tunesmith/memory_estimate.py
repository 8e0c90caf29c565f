"""Peak training memory of a decoder-only transformer, from its shape and the job's setup.

Torch-free on purpose: the API can answer "will this fit?" without loading a model. Every
term is derived from what the libraries allocate, tensor by tensor, not fitted per case:

- weights: the base in the job's precision; QLoRA's linear layers at 4 (or 8) bits plus their
  quantisation constants, with the rest (embeddings, norms, head) upcast to fp32 by peft's
  `prepare_model_for_kbit_training`;
- trainable parameters: full fine-tuning trains the base in its own dtype; peft keeps
  adapters and prompt encoders in fp32 (`autocast_adapter_dtype`); each has a gradient and
  AdamW's two moments in the same dtype (torch's AdamW, fused: no step temporaries);
- activations: what autograd saves for backward in one Llama-style decoder layer (RMSNorm,
  grouped-query SDPA, SwiGLU), counted per token in units of the hidden size, by dtype
  (the residual stream's, the autocast compute dtype's, fp32 where RMSNorm upcasts). A frozen
  linear layer saves no input; a trained one does; a LoRA module saves its dropout mask and the
  compute-dtype copy of its input. With activation checkpointing only each layer's input is
  kept, and one layer's activations are rebuilt at a time in backward;
- logits: trl's SFT trainer computes log-probabilities in tiles and never holds the
  (batch, sequence, vocabulary) logits; trainers that do (causal-LM loss of the plain
  Trainer) hold them in the compute dtype, a fp32 copy and the fp32 log-softmax;
- the device: the CUDA context and the caching allocator's slack, which `torch.cuda`'s
  allocation counter does not see but free memory does.

`peak_allocated` is what `torch.cuda.max_memory_allocated` reports; `device_total` adds the
context and slack. Checked against a measured H200 table in tests/unit/test_memory_estimate.py.
"""

from dataclasses import dataclass
from typing import Any

GIB = 2**30
# The CUDA context (cuBLAS/cuDNN handles, kernels; lazy module loading) of a torch process.
CUDA_CONTEXT_BYTES = int(0.5 * GIB)
# The caching allocator's reserved-over-allocated margin (rounding, fragmentation).
ALLOCATOR_SLACK = 0.10
# trl's chunked log-probabilities: tiles of 4096 tokens by 4096 vocabulary entries, fp32, with
# their gradient in backward.
LOGITS_TILE_BYTES = 2 * 4096 * 4096 * 4

PROMPT_TUNINGS = frozenset({"prompt", "p_tuning"})  # virtual tokens at the input
KV_PREFIX_TUNINGS = frozenset({"prefix", "p_tuning_v2"})  # virtual keys/values at every layer
TUNINGS = frozenset({"full", "lora", "qlora", "adapter"}) | PROMPT_TUNINGS | KV_PREFIX_TUNINGS


@dataclass(frozen=True)
class ModelShape:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    tied_embeddings: bool = False

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "ModelShape":
        """From a transformers `config.json` (Llama, Mistral, Qwen2 and alike)."""
        text = config.get("text_config") or config
        heads = int(text["num_attention_heads"])
        return cls(hidden=int(text["hidden_size"]), layers=int(text["num_hidden_layers"]),
                   heads=heads, kv_heads=int(text.get("num_key_value_heads") or heads),
                   intermediate=int(text["intermediate_size"]), vocab=int(text["vocab_size"]),
                   tied_embeddings=bool(config.get("tie_word_embeddings", False)))

    @property
    def kv_dim(self) -> int:
        return self.hidden // self.heads * self.kv_heads

    @property
    def linear_shapes(self) -> tuple[tuple[int, int], ...]:
        """(in, out) of each linear layer of one decoder layer: q, k, v, o, gate, up, down."""
        h, i, kv = self.hidden, self.intermediate, self.kv_dim
        return ((h, h), (h, kv), (h, kv), (h, h), (h, i), (h, i), (i, h))

    @property
    def linear_parameters(self) -> int:
        return self.layers * sum(a * b for a, b in self.linear_shapes)

    @property
    def other_parameters(self) -> int:
        """Embeddings, the output head and the norms: what QLoRA does not quantise."""
        heads = 1 if self.tied_embeddings else 2
        return heads * self.vocab * self.hidden + (2 * self.layers + 1) * self.hidden

    @property
    def parameters(self) -> int:
        return self.linear_parameters + self.other_parameters


@dataclass(frozen=True)
class TrainingSetup:
    tuning: str
    precision: str  # "bf16", "fp16" or "fp32"
    micro_batch: int  # rows per forward pass on one device
    seq_len: int
    checkpointing: bool
    lora_rank: int = 8
    lora_dropout: float = 0.05
    qlora_bits: int = 4
    qlora_double_quant: bool = True
    virtual_tokens: int = 20
    prefix_encoder_hidden: int = 512
    adapter_size: int = 64
    adapters_per_layer: int = 1
    # trl's SFT computes log-probabilities in tiles; other trainers hold the whole logits.
    chunked_logits: bool = True
    device: str = "cuda"
    # Sequences a row makes: 2 for preference pairs (chosen and rejected).
    sequences_per_row: int = 1
    # The job's `quantization.method` (bnb_nf4, bnb_fp4, bnb_int8, gptq) for a tuning on a
    # quantised base; `qlora` is quantised without it (its bits above).
    quantization: str | None = None
    # AdamW's moments: 32-bit, or 8-bit (bitsandbytes' 8-bit and paged 8-bit AdamW).
    optimizer_bits: int = 32
    # A paged optimizer (QLoRA's paged AdamW) keeps its state in CUDA unified memory, which
    # bitsandbytes allocates outside torch's allocator and which pages out to the host when
    # the GPU runs short: it is not part of the device peak.
    paged_optimizer: bool = False

    @property
    def quantized(self) -> bool:
        return self.tuning == "qlora" or self.quantization is not None

    @property
    def quantized_bits(self) -> int:
        if self.quantization is None:
            return self.qlora_bits
        return 8 if self.quantization == "bnb_int8" else 4


@dataclass(frozen=True)
class Estimate:
    """Bytes, by what holds them."""

    weights: int
    trainable: int  # trainable parameters kept apart from the weights (adapters, prompts)
    gradients: int
    optimizer: int
    activations: int  # at their peak: all saved tensors, or checkpoints plus one layer
    logits: int
    peak_allocated: int
    paged: int = 0  # optimizer state in unified memory, outside peak_allocated

    @property
    def device_total(self) -> int:
        return int(self.peak_allocated * (1 + ALLOCATOR_SLACK)) + CUDA_CONTEXT_BYTES

    def fits(self, free_bytes: int | None) -> bool:
        """Whether the job fits `free_bytes` as read in a process whose CUDA context exists
        (torch.cuda.mem_get_info), so the context itself is already spent."""
        if free_bytes is None:
            return True
        return self.device_total - CUDA_CONTEXT_BYTES <= free_bytes

    def fits_resident(self, free_bytes: int | None) -> bool:
        """Whether it fits with paged optimizer state resident too (no paging at all)."""
        if free_bytes is None:
            return True
        return self.device_total - CUDA_CONTEXT_BYTES + self.paged <= free_bytes

    def as_gib(self) -> dict[str, float]:
        fields = ("weights", "trainable", "gradients", "optimizer", "activations", "logits",
                  "peak_allocated", "paged")
        out = {f"{name}_gib": round(getattr(self, name) / GIB, 2) for name in fields}
        out["device_total_gib"] = round(self.device_total / GIB, 2)
        return out


def _bytes(precision: str) -> int:
    return 4 if precision == "fp32" else 2


def _trainable_parameters(shape: ModelShape, setup: TrainingSetup) -> int:
    """Parameters outside the base model that train (peft keeps them in fp32)."""
    h, layers, p = shape.hidden, shape.layers, setup.virtual_tokens
    if setup.tuning in ("lora", "qlora"):
        return layers * sum(setup.lora_rank * (a + b) for a, b in shape.linear_shapes)
    if setup.tuning == "adapter":
        return layers * setup.adapters_per_layer * (2 * h * setup.adapter_size
                                                    + h + setup.adapter_size)
    kv_width = 2 * layers * h  # peft's prefix: keys and values for every layer
    if setup.tuning == "prefix":
        e = setup.prefix_encoder_hidden
        return p * h + h * e + e + e * kv_width + kv_width
    if setup.tuning == "p_tuning_v2":
        return p * kv_width
    if setup.tuning == "p_tuning":
        e = setup.prefix_encoder_hidden
        return p * h + 2 * (h * e + e) + e * h + h
    if setup.tuning == "prompt":
        return p * h
    return 0


def _base_weight_bytes(shape: ModelShape, setup: TrainingSetup) -> int:
    if not setup.quantized:
        return shape.parameters * _bytes(setup.precision)
    if setup.quantization == "gptq":
        # 4-bit packed weights, one fp16 scale and a packed 4-bit zero per group of 128.
        quantised = int(shape.linear_parameters * (0.5 + 2.5 / 128))
    elif setup.quantized_bits == 8:  # int8 weights and one fp32 scale per output row
        quantised = shape.linear_parameters + 4 * shape.layers * sum(
            b for _, b in shape.linear_shapes)
    else:
        # NF4/FP4: half a byte each, one absmax per block of 64; double quantisation stores
        # those as bytes with one fp32 per 256 blocks, else as fp32.
        constants = (1 / 64 + 4 / (64 * 256)) if setup.qlora_double_quant else 4 / 64
        quantised = int(shape.linear_parameters * (0.5 + constants))
    return quantised + 4 * shape.other_parameters


def layer_activation_bytes_per_token(shape: ModelShape, setup: TrainingSetup) -> float:
    """What autograd keeps for one decoder layer and one token, without checkpointing."""
    h = shape.hidden
    i = shape.intermediate / h
    compute = _bytes(setup.precision)  # autocast's matmul dtype
    # The residual stream: QLoRA's embeddings are upcast to fp32, so its stream is fp32.
    stream = 4 if setup.quantized else _bytes(setup.precision)
    # bitsandbytes casts a layer's output back to its input's dtype.
    linear_out = stream if setup.quantized else compute
    full = setup.tuning == "full"
    units = 0.0
    # Two RMSNorms: each upcasts its input to fp32 and keeps it (and its normalised output
    # when its own weight trains).
    units += 2 * (4 + (stream if full else 0))
    if full:  # trained linear layers keep their inputs: qkv, o, gate/up, down
        units += compute * (3 + i)
    if setup.tuning in ("lora", "qlora"):
        # Each LoRA module: its dropout mask and lora_A's input in compute dtype. The mask is
        # bool in CUDA's fused dropout; elsewhere it has the (fp32, peft's cast) input's dtype.
        mask = (1 if setup.device == "cuda" else 4) if setup.lora_dropout > 0 else 0
        per_input = compute + mask
        units += per_input * (6 + i)  # q, k, v, o, gate, up read h wide; down reads i
    if setup.tuning == "adapter":
        units += setup.adapters_per_layer * compute * (1 + 3 * setup.adapter_size / h)
    # SDPA keeps q, k, v and its output. Keys/values stay grouped (GQA) unless a prefix
    # cache forces an explicit mask, which makes transformers repeat them per head.
    if setup.tuning in KV_PREFIX_TUNINGS:
        kv = (setup.seq_len + setup.virtual_tokens) / setup.seq_len
    else:
        kv = shape.kv_heads / shape.heads
    units += compute * (2 + 2 * kv)
    # SwiGLU: SiLU keeps the gate, the product keeps SiLU's output and up's.
    units += 3 * i * linear_out
    return units * h


def estimate(shape: ModelShape, setup: TrainingSetup) -> Estimate:
    if setup.tuning not in TUNINGS:
        raise ValueError(f"unknown tuning {setup.tuning!r}")
    tokens = setup.micro_batch * setup.sequences_per_row * (setup.seq_len + (
        setup.virtual_tokens if setup.tuning in PROMPT_TUNINGS else 0))
    stream = 4 if setup.quantized else _bytes(setup.precision)

    weights = _base_weight_bytes(shape, setup)
    trainable = _trainable_parameters(shape, setup) * 4
    # Gradients and AdamW's two moments take the trained parameters' dtype.
    trained = weights if setup.tuning == "full" else trainable
    gradients, optimizer = trained, 2 * trained
    if setup.optimizer_bits == 8:
        # One byte a moment, and one fp32 absmax per block of 256 values.
        elements = trained // (4 if setup.tuning != "full" else _bytes(setup.precision))
        optimizer = 2 * elements + 2 * elements * 4 // 256

    layer = layer_activation_bytes_per_token(shape, setup) * tokens
    if setup.checkpointing:
        # Each layer's input, plus one layer rebuilt during backward.
        saved = shape.layers * stream * shape.hidden * tokens + layer
    else:
        saved = shape.layers * layer
    # The final norm's fp32 copy and the head's input.
    saved += (4 + stream) * shape.hidden * tokens
    if setup.chunked_logits:
        logits = min(LOGITS_TILE_BYTES, tokens * shape.vocab * 8) + 16 * tokens
    else:
        # The logits, their fp32 copy (none when already fp32) and the fp32 log-softmax.
        compute = _bytes(setup.precision)
        logits = tokens * shape.vocab * (compute + (0 if compute == 4 else 4) + 4)

    # The peak: when backward starts (every saved activation and the logits alive), or when
    # it ends (every gradient, plus the layer being rebuilt under checkpointing).
    during = max(saved + logits, gradients + (layer if setup.checkpointing else 0))
    paged = optimizer if setup.paged_optimizer and setup.device == "cuda" else 0
    peak = weights + trainable + optimizer - paged + during
    return Estimate(weights=weights, trainable=trainable, gradients=gradients,
                    optimizer=optimizer, activations=int(saved), logits=int(logits),
                    peak_allocated=int(peak), paged=int(paged))
