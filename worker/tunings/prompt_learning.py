"""What the four prompt-learning tunings share (prefix, p_tuning_v2, p_tuning, prompt).

Each learns virtual tokens through a peft config and leaves every model weight frozen; the
artifact is a PEFT folder (`PeftModel.from_pretrained(base, folder)` loads it as it is).
Two places where the installed peft and transformers disagree are fixed here, on the model
instance only: generation (`fix_generation`) and resuming a reparameterised encoder from a
checkpoint (`keep_encoder_in_checkpoints`).
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from peft import PeftModel, PeftType, PromptLearningConfig, TaskType, get_peft_model
from safetensors.torch import load_file, save_file

from tunesmith.spec.tunings import TuningSpec
from worker.registry import ModelTask, TuningPlan, register_tuning
from worker.training.context import JobContext
from worker.tunings.lora import save_peft

T = TypeVar("T", bound=TuningSpec)
# Builds the peft config from the job's tuning spec, the peft task type and the job.
ConfigBuilder = Callable[[T, TaskType, JobContext], PromptLearningConfig]


def task_type(task: ModelTask) -> TaskType:
    return TaskType.SEQ_CLS if task == "seq_cls" else TaskType.CAUSAL_LM


def fix_generation(model: PeftModel) -> PeftModel:
    """Make `generate` see the virtual tokens again (transformers 5.24 with peft 0.21.2).

    transformers 5 renamed the generation cache key from `past_key_values` to `cache`, and
    peft 0.21.2's `PeftModelForCausalLM.prepare_inputs_for_generation` still looks only for
    `past_key_values`: it then injects the prefix (or soft prompt) into a key the model
    ignores in favour of the empty `cache` (prefix and p_tuning_v2 generate exactly what the
    base model does), and re-injects the soft prompt at every decoding step (prompt,
    p_tuning). Training and plain forward passes are not affected. This renames the key on
    the way into peft's logic and back out of it.

    Remove this (and its call below) once peft's prepare_inputs_for_generation reads `cache`:
    tests/unit/test_tuning_plans.py::test_peft_generation_still_needs_our_fix runs an
    unpatched peft model and fails as soon as peft gets it right by itself.
    """
    if not isinstance(model, PeftModel) or not model.active_peft_config.is_prompt_learning:
        return model
    if getattr(model, "_tunesmith_generation_fixed", False):
        return model
    peft_prepare = model.prepare_inputs_for_generation
    base_prepare = model.base_model_prepare_inputs_for_generation

    def base_prepare_old_names(*args: Any, **kwargs: Any) -> dict[str, Any]:
        inputs = base_prepare(*args, **kwargs)
        if "cache" in inputs and "past_key_values" not in inputs:
            inputs["past_key_values"] = inputs.pop("cache")
        return inputs

    def prepare(*args: Any, **kwargs: Any) -> dict[str, Any]:
        # peft calls `self.base_model_prepare_inputs_for_generation`; swap ours in for the call
        # only, so that the base model's own generate (peft restores it) stays untouched.
        model.base_model_prepare_inputs_for_generation = base_prepare_old_names
        try:
            inputs = peft_prepare(*args, **kwargs)
        finally:
            model.base_model_prepare_inputs_for_generation = base_prepare
        if "past_key_values" in inputs and "cache" not in inputs:
            inputs["cache"] = inputs.pop("past_key_values")
        return inputs

    # peft's generate installs `self.prepare_inputs_for_generation` on the base model per call.
    model.prepare_inputs_for_generation = prepare
    model._tunesmith_generation_fixed = True
    return model


# The trainable prompt encoder, beside peft's files in checkpoints (and in the artifact).
ENCODER_STATE = "prompt_encoder.safetensors"


def reparameterised(config: PromptLearningConfig) -> bool:
    """True where the virtual tokens come out of a trained network (an MLP or LSTM)."""
    return config.peft_type == PeftType.P_TUNING or (
        config.peft_type == PeftType.PREFIX_TUNING and bool(getattr(config, "prefix_projection",
                                                                    False)))


def keep_encoder_in_checkpoints(model: PeftModel) -> PeftModel:
    """Let a job with a prompt encoder (prefix, p_tuning) resume from its checkpoints.

    peft saves what the encoder outputs (`prompt_embeddings`), not the encoder: right for
    inference, but the Trainer resumes with `load_adapter(checkpoint, is_trainable=True)`,
    which loads that output into the encoder's input embedding (measured with peft 0.21.2:
    prefix tuning with projection fails with a size mismatch; p_tuning resumes silently
    from different prompts). So every save also writes the encoder's own weights to
    `prompt_encoder.safetensors`, and a trainable load from a folder that has them restores
    the encoder exactly; `PeftModel.from_pretrained` ignores the file. Remove this once peft
    saves the encoder for training: tests/unit/test_tuning_plans.py's resume test then
    passes without it.
    """
    if not reparameterised(model.active_peft_config):
        return model
    save_pretrained, load_adapter = model.save_pretrained, model.load_adapter

    def save(save_directory: str, *args: Any, is_main_process: bool = True,
             **kwargs: Any) -> None:
        save_pretrained(save_directory, *args, is_main_process=is_main_process, **kwargs)
        if is_main_process:
            encoder = model.prompt_encoder[model.active_adapter]
            state = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
            save_file(state, str(Path(save_directory) / ENCODER_STATE), metadata={"format": "pt"})

    def load(model_id: str, adapter_name: str, *args: Any, is_trainable: bool = False,
             **kwargs: Any) -> Any:
        path = Path(model_id) / ENCODER_STATE
        if is_trainable and adapter_name in model.prompt_encoder and path.is_file():
            encoder = model.prompt_encoder[adapter_name]
            device = next(encoder.parameters()).device
            return encoder.load_state_dict(load_file(str(path), device=str(device)))
        return load_adapter(model_id, adapter_name, *args, is_trainable=is_trainable, **kwargs)

    model.save_pretrained = save
    model.load_adapter = load
    return model


def register_prompt_learning(spec: type[T], build: ConfigBuilder[T]) -> TuningPlan[T]:
    """Register a prompt-learning tuning: no load options, peft wrapping, a PEFT folder."""

    def apply(model: Any, tuning: T, task: ModelTask, ctx: JobContext) -> Any:
        peft_model = get_peft_model(model, build(tuning, task_type(task), ctx))
        return keep_encoder_in_checkpoints(fix_generation(peft_model))

    return register_tuning(TuningPlan(spec=spec, apply=apply, save=save_peft))
