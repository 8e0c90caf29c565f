"""The job spec's rules, per objective and tuning, without servers: what each method class
declares (formats, tunings, stages, quantisation) is what the spec enforces."""

from typing import Any

import pytest
from pydantic import ValidationError

from tunesmith.spec.job import JobSpec, file_uses, stored_spec
from tunesmith.spec.objectives import METHOD_CLASSES, MethodSpec, RLHFMethod
from tunesmith.spec.quantization import QUANTIZABLE_TUNINGS
from tunesmith.spec.tunings import TUNING_CLASSES

# The least each method needs besides its type.
METHOD_BODIES: dict[str, dict[str, Any]] = {
    "multitask": {"tasks": [{"name": "a", "file": "file-a"}, {"name": "b", "file": "file-b"}]},
    "ppo": {"reward_model": {"job": "ftjob-reward"}},
    "rlhf": {"preference_file": "file-pref", "prompt_file": "file-prompts"},
}
TUNING_BODIES: dict[str, dict[str, Any]] = {"prompt": {"init": "random"}}


def _name(method: type[MethodSpec]) -> str:
    return method.type_name()


def body(method: str = "supervised", tuning: str = "lora", **fields: Any) -> dict[str, Any]:
    return {"model": "tiny", "training_file": "file-train",
            "method": {"type": method, method: METHOD_BODIES.get(method, {})},
            "tuning": {"type": tuning, **TUNING_BODIES.get(tuning, {})}, **fields}


def refusal(data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as error:
        JobSpec.model_validate(data)
    return str(error.value)


@pytest.mark.parametrize("method", METHOD_CLASSES, ids=_name)
def test_each_method_takes_exactly_the_tunings_it_declares(method: type[MethodSpec]) -> None:
    for tuning in TUNING_CLASSES:
        data = body(method.type_name(), tuning.type_name())
        if method.supports(tuning):
            assert JobSpec.model_validate(data).tuning.type == tuning.type_name()
        else:
            message = refusal(data)
            assert f"tuning '{tuning.type_name()}' does not work with method" in message
            assert str(sorted(method.tunings())) in message


@pytest.mark.parametrize("method", METHOD_CLASSES, ids=_name)
def test_the_stored_spec_reads_back_as_accepted(method: type[MethodSpec]) -> None:
    spec = JobSpec.model_validate(body(method.type_name()))
    assert stored_spec(spec.model_dump(mode="json")) == spec
    assert isinstance(spec.method, method)
    assert spec.method.config is getattr(spec.method, method.type_name())


def test_weight_tunings_are_what_the_preference_and_rl_trainers_take() -> None:
    weights = {t.type_name() for t in TUNING_CLASSES if t.changes_weights}
    assert weights == {"full", "lora", "qlora"}
    for name in ("reward", "ppo", "rlhf", "dpo", "grpo"):
        assert next(m for m in METHOD_CLASSES if m.type_name() == name).tunings() == weights


def test_files_are_checked_against_the_formats_their_method_reads() -> None:
    spec = JobSpec.model_validate(body("rlhf", validation_file="file-val"))
    uses = {use.field: use for use in file_uses(spec)}
    assert set(uses) == {"training_file", "validation_file", "method.rlhf.preference_file",
                         "method.rlhf.prompt_file"}
    assert {f.value for f in uses["method.rlhf.preference_file"].formats} == {
        "preference", "openai_preference"}
    assert "messages" in {f.value for f in uses["training_file"].formats}
    tasks = file_uses(JobSpec.model_validate(body("multitask", training_file=None)))
    assert [use.field for use in tasks] == ["method.multitask.tasks[0].file",
                                            "method.multitask.tasks[1].file"]


def test_training_file_is_required_except_for_multitask() -> None:
    assert "training_file is required" in refusal(body("supervised", training_file=None))


def test_top_level_hyperparameters_merge_into_the_first_stage() -> None:
    spec = JobSpec.model_validate(body("rlhf", hyperparameters={"n_epochs": 3}))
    assert isinstance(spec.method, RLHFMethod)
    assert spec.method.rlhf.sft.hyperparameters.n_epochs == 3
    assert spec.method.hyperparameters is spec.method.rlhf.sft.hyperparameters
    data = body("supervised", hyperparameters={"n_epochs": 3})
    data["method"]["supervised"] = {"hyperparameters": {"n_epochs": 2}}
    message = refusal(data)
    assert "hyperparameters.n_epochs differs" in message
    assert "method.supervised.hyperparameters" in message


@pytest.mark.parametrize("tuning", ["prefix", "p_tuning_v2"])
def test_kv_prefix_tunings_refuse_activation_checkpointing(tuning: str) -> None:
    data = body("supervised", tuning)
    data["method"]["supervised"] = {"hyperparameters": {"gradient_checkpointing": True}}
    assert ("method.supervised.hyperparameters.gradient_checkpointing cannot be true"
            in refusal(data))
    data = body("rlhf", "lora", hyperparameters={"gradient_checkpointing": True})
    assert JobSpec.model_validate(data)  # lora keeps checkpointing


def test_padding_free_refused_for_prompt_learning() -> None:
    data = body("supervised", "prompt")
    data["method"]["supervised"] = {"padding_free": True}
    assert "padding_free cannot be true with tuning 'prompt'" in refusal(data)


@pytest.mark.parametrize("method", METHOD_CLASSES, ids=_name)
def test_quantization_follows_the_declared_facts(method: type[MethodSpec]) -> None:
    for tuning in TUNING_CLASSES:
        if not method.supports(tuning):
            continue
        data = body(method.type_name(), tuning.type_name(),
                    quantization={"method": "bnb_nf4"})
        if method.quantizable and tuning.type_name() in QUANTIZABLE_TUNINGS:
            assert JobSpec.model_validate(data).quantization is not None
        else:
            assert "quantization cannot be used" in refusal(data)


def test_unknown_fields_and_coercions_are_refused() -> None:
    assert "Extra inputs are not permitted" in refusal(body(epochs=3))
    data = body()
    data["method"]["supervised"] = {"hyperparameters": {"n_epochs": "3"}}
    assert "n_epochs" in refusal(data)
