"""A job's dry run: what it would resolve to, the memory it needs, which GPU classes it fits.

Torch-free: the API answers from the model's config.json and the job spec, with the same
hyperparameter resolution and memory plan the worker runs (worker/training/hyperparameters.py and
tunesmith/memory_plan.py are pure Python), planned for each GPU class as the worker would
plan it on that card.
"""

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from tunesmith.memory_estimate import CUDA_CONTEXT_BYTES, GIB, ModelShape, TrainingSetup
from tunesmith.memory_estimate import TUNINGS as ESTIMATED_TUNINGS
from tunesmith.memory_plan import MemoryPlan, choose
from tunesmith.model_names import ModelLocation
from tunesmith.spec.job import JobSpec
from tunesmith.spec.quantization import QUANTIZABLE_TUNINGS
from tunesmith.spec.tunings import QLoraTuning

QUANTIZED_OPTIMIZER = "paged_adamw_32bit"


class GpuClassesError(ValueError):
    pass


def parse_gpu_classes(text: str) -> dict[str, float]:
    """"h100=80,l4=24" -> {"h100": 80.0, "l4": 24.0} (GiB)."""
    classes: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, gib = item.partition("=")
        try:
            size = float(gib)
        except ValueError:
            size = -1.0
        if not sep or not name.strip() or size <= 0:
            raise GpuClassesError(f"TUNESMITH_GPU_CLASSES: {item!r} is not 'class=GiB'")
        classes[name.strip()] = size
    return classes


def read_config(location: ModelLocation) -> dict[str, Any] | None:
    """The model's config.json where the server has it (a hub id is downloaded by the
    worker, so its shape is unknown here)."""
    if location.source != "local":
        return None
    path = Path(location.path_or_id) / "config.json"
    try:
        config: dict[str, Any] = json.loads(path.read_text())
        return config
    except (OSError, ValueError):
        return None


def training_setup(spec: JobSpec, device: str = "cuda") -> TrainingSetup:
    """The estimate's view of the job's tuning (as worker/training/workflow.py builds it)."""
    t = spec.tuning
    return TrainingSetup(
        tuning=t.type, precision="bf16", micro_batch=1, seq_len=1, checkpointing=False,
        lora_rank=getattr(t, "r", 8), lora_dropout=getattr(t, "dropout", 0.0),
        qlora_bits=getattr(t, "bits", 4), qlora_double_quant=getattr(t, "double_quant", True),
        virtual_tokens=getattr(t, "num_virtual_tokens", 20),
        prefix_encoder_hidden=getattr(t, "encoder_hidden_size", 512),
        adapter_size=getattr(t, "size", 64),
        adapters_per_layer=2 if getattr(t, "placement", "") == "houlsby" else 1,
        chunked_logits=spec.method.type == "supervised", device=device,
        sequences_per_row=spec.method.planned_sequences or 1,
        quantization=spec.quantization.method if spec.quantization else None,
        # Quantised jobs train with paged AdamW on CUDA (worker/training/quantization.py).
        paged_optimizer=spec.quantization is not None or isinstance(t, QLoraTuning))


def _resolve(spec: JobSpec, *, rows: int, config: dict[str, Any] | None,
             shape: ModelShape | None, free_bytes: int | None) -> Any:
    # Imported here: the worker package's resolution is pure Python, and only a dry run
    # needs it in the API.
    from worker.training.hyperparameters import MemoryInputs, resolve

    setup = training_setup(spec)
    memory = None
    if shape is not None and spec.method.planned_sequences:
        memory = MemoryInputs(shape=shape, setup=setup, free_bytes=free_bytes,
                              lean=setup.quantized)
    max_length = int((config or {}).get("max_position_embeddings") or 1024)
    return resolve(
        spec.method.hyperparameters, rows=max(1, rows),
        default_learning_rate=spec.tuning.default_learning_rate, device="cuda",
        bf16_supported=True, model_max_length=max_length,
        model_parameters=shape.parameters if shape else 0,
        supports_gradient_checkpointing=spec.tuning.activation_checkpointing,
        memory=memory)


def _plan_view(plan: MemoryPlan) -> dict[str, Any]:
    return {"micro_batch_size": plan.micro_batch, "gradient_checkpointing": plan.checkpointing,
            **plan.estimate.as_gib()}


def _free_on(gib: float) -> int:
    """What the worker reads as free on a card of `gib`: its memory less the CUDA context."""
    return int(gib * GIB) - CUDA_CONTEXT_BYTES


def _fits_with(spec: JobSpec, shape: ModelShape, hp: Any, gib: float,
               **changes: Any) -> MemoryPlan:
    """The leanest plan of the job with `changes` to its setup, on a card of `gib`."""
    setup = replace(training_setup(spec), precision=hp.precision,
                    seq_len=changes.pop("seq_len", hp.max_seq_length), **changes)
    per_device = max(1, hp.batch_size)
    return choose(shape, replace(setup, micro_batch=per_device), batch=per_device,
                  free_bytes=_free_on(gib), checkpointing=None,
                  supports_checkpointing=spec.tuning.activation_checkpointing,
                  lean=setup.quantized)


def suggestions(spec: JobSpec, shape: ModelShape, hp: Any, gib: float, card: str) -> list[str]:
    """Changes that each make the job fit a card of `gib`, leanest first."""
    found: list[str] = []
    tuning = spec.tuning.type

    def fits(**changes: Any) -> MemoryPlan | None:
        plan = _fits_with(spec, shape, hp, gib, **changes)
        return plan if plan.estimate.fits(_free_on(gib)) else None

    def say(change: str, plan: MemoryPlan) -> None:
        found.append(f"{change}: estimated {plan.estimate.as_gib()['device_total_gib']} GiB "
                     f"on {card} ({gib:g} GiB)")

    if tuning == "full" and (plan := fits(tuning="lora")):
        say('train an adapter instead: tuning {"type": "lora"}', plan)
    if (spec.quantization is None and tuning in QUANTIZABLE_TUNINGS | {"full"}
            and (plan := fits(tuning="lora" if tuning == "full" else tuning,
                              quantization="bnb_nf4"))):
        say('quantise the base: quantization {"method": "bnb_nf4"}'
            + (' with tuning {"type": "lora"}' if tuning == "full" else ""), plan)
    length = hp.max_seq_length // 2
    while length >= 128:
        if plan := fits(seq_len=length):
            say(f"shorten the sequences: hyperparameters.max_seq_length {length}", plan)
            break
        length //= 2
    if spec.method.hyperparameters.gradient_checkpointing is False:
        found.insert(0, "let activation checkpointing be chosen: "
                        "hyperparameters.gradient_checkpointing auto")
    return found


def dry_run(spec: JobSpec, location: ModelLocation | None, *, rows: int,
            gpu_classes: dict[str, float]) -> dict[str, Any]:
    """The dry run's answer (nothing stored, nothing queued)."""
    config = read_config(location) if location is not None else None
    notes: list[str] = []
    shape = None
    if config is not None:
        try:
            shape = ModelShape.from_config(config)
        except (KeyError, TypeError, ValueError):
            notes.append("the model's config.json has no Llama-style shape (hidden_size, "
                         "num_hidden_layers, ...): no memory estimate")
    elif location is not None and location.source == "hub":
        notes.append(f"'{location.name}' is a hub id the worker downloads: its config.json "
                     "is not on this server, so the memory estimate and the model's "
                     "maximum length (1024 assumed) are unknown until the job runs")
    else:
        notes.append("the model's config.json cannot be read: no memory estimate")
    if shape is not None and spec.tuning.type not in ESTIMATED_TUNINGS:
        # A tuning newer than the estimate's model of memory trains without a plan.
        notes.append(f"the memory estimate does not model tuning '{spec.tuning.type}': no "
                     "memory estimate")
        shape = None
    if not spec.method.planned_sequences and shape is not None:
        notes.append(f"method '{spec.method.type}' sizes its own batches around generation: "
                     "the estimate is the training pass alone")
    hp = _resolve(spec, rows=rows, config=config, shape=shape, free_bytes=None)
    quantized = spec.quantization is not None or isinstance(spec.tuning, QLoraTuning)
    answer: dict[str, Any] = {
        "object": "fine_tuning.job.dry_run", "model": spec.model,
        "method": spec.method.type, "tuning": spec.tuning.type,
        "quantization": spec.quantization.method if spec.quantization else (
            "bnb_nf4" if isinstance(spec.tuning, QLoraTuning) else None),
        "hyperparameters": hp.as_dict(),
        "optimizer": QUANTIZED_OPTIMIZER if quantized else "adamw_torch",
        "devices": 1 if spec.resources.gpus in ("auto", 0) else spec.resources.gpus,
        "memory": None, "gpu_classes": [], "fits": None, "notes": notes,
    }
    if quantized:
        notes.append("quantised jobs train with paged AdamW on CUDA (32-bit state where the "
                     "estimate fits the free memory, else 8-bit); AdamW on CPU")
    if shape is None:
        return answer
    if hp.memory is not None:
        answer["memory"] = {"per_device": _plan_view(hp.memory),
                            "parameters": shape.parameters}
    wanted = spec.resources.gpu_class
    classes = {k: v for k, v in gpu_classes.items() if wanted is None or k == wanted}
    if wanted is not None and not classes:
        notes.append(f"resources.gpu_class '{wanted}' is not among the configured GPU "
                     f"classes ({', '.join(gpu_classes) or 'none configured'})")
    for name, gib in classes.items():
        plan = _fits_with(spec, shape, hp, gib)
        fits = plan.estimate.fits(_free_on(gib))
        entry: dict[str, Any] = {"gpu_class": name, "memory_gib": gib, "fits": fits,
                                 "plan": _plan_view(plan)}
        if not fits:
            entry["suggestions"] = suggestions(spec, shape, hp, gib, f"'{name}'")
        answer["gpu_classes"].append(entry)
    if answer["gpu_classes"]:
        answer["fits"] = any(entry["fits"] for entry in answer["gpu_classes"])
    return answer
