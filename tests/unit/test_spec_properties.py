"""Property tests of the job spec, whatever parsed the body: any value at any field is either
refused with a ValidationError or gives a spec that strict JSON can store and read back (the
worker validates the stored spec again). Hostile values: huge integers, NaN and infinities,
bools where numbers go, lone surrogates, long strings, deep nesting."""

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tunesmith.spec.job import JobSpec

BASE: dict[str, Any] = {"model": "tiny-llama", "training_file": "file-0123456789"}

# Where a hostile value goes: every kind of field of the spec (numbers, strings, lists,
# dicts), at the depth a user writes it.
PATHS: list[tuple[str, ...]] = [
    ("seed",), ("suffix",), ("model",), ("training_file",), ("validation_file",),
    ("metadata",), ("metadata", "k"),
    ("tuning", "alpha"), ("tuning", "r"), ("tuning", "dropout"), ("tuning", "target_modules"),
    ("tuning", "use_rslora"), ("resources", "gpus"), ("resources", "gpu_class"),
    *[("method", "supervised", "hyperparameters", name) for name in (
        "n_epochs", "batch_size", "learning_rate", "learning_rate_multiplier", "max_steps",
        "warmup_ratio", "save_steps", "logging_steps", "weight_decay",
        "gradient_checkpointing")],
]
TUNINGS = {"tuning": {"type": "lora"}, "resources": {}, "metadata": {},
           "method": {"type": "supervised", "supervised": {"hyperparameters": {}}}}

# The values that broke the service, each tried at every path (and mixed into the draws).
SPECIALS: list[Any] = [float("inf"), float("-inf"), float("nan"), 1e308, True, False, 10**400,
                       -(10**30), "\ud800", "a\udc00b", "x" * 5000, "", {"\ud800": "v"},
                       {"k" * 65: "v"}, {f"k{i}": "v" for i in range(17)}, ["q_proj", "\ud800"]]

hostile_scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(), st.integers(min_value=10**18, max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([float("inf"), float("-inf"), float("nan"), 1e308, -0.0, 5e-324]),
    st.text(max_size=50), st.text(min_size=300, max_size=2000),
    st.sampled_from(["\ud800", "a\udc00b", "auto", "all-linear", "1", "true", "NaN"]),
)
json_values = st.recursive(
    hostile_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.text(max_size=70) | st.sampled_from(["\ud800", "k" * 65]), inner, max_size=20),
    max_leaves=30,
)


def _deep(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def _with(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    spec = json.loads(json.dumps({**BASE, **{k: TUNINGS[k] for k in path[:1] if k in TUNINGS}}))
    node = spec
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    return spec


def _stored_and_read_back(spec: JobSpec) -> None:
    # Strict JSON (no NaN/Infinity tokens), valid Unicode (no lone surrogate, which
    # PostgreSQL's JSONB and strict clients refuse).
    stored = json.dumps(spec.model_dump(mode="json"), allow_nan=False, ensure_ascii=False)
    stored.encode("utf-8")
    again = JobSpec.model_validate(json.loads(stored))  # what the worker does
    assert again == spec


@pytest.mark.parametrize("path", PATHS, ids=".".join)
def test_each_hostile_value_at_each_field_is_refused_or_read_back(path: tuple[str, ...]) -> None:
    for value in SPECIALS:
        try:
            spec = JobSpec.model_validate(_with(path, value))
        except ValidationError:
            continue
        _stored_and_read_back(spec)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(PATHS), value=st.one_of(st.sampled_from(SPECIALS), json_values))
def test_any_value_anywhere_is_refused_or_stored_and_read_back(path: tuple[str, ...],
                                                               value: Any) -> None:
    try:
        spec = JobSpec.model_validate(_with(path, value))
    except ValidationError as exc:
        assert exc.errors()  # refused, with the field at fault
        return
    _stored_and_read_back(spec)


@settings(max_examples=200, deadline=None)
@given(body=st.dictionaries(st.sampled_from([*JobSpec.model_fields, "x"]), json_values,
                            max_size=8))
def test_any_body_is_refused_or_stored_and_read_back(body: dict[str, Any]) -> None:
    try:
        spec = JobSpec.model_validate(body)
    except ValidationError:
        return
    _stored_and_read_back(spec)


def test_deep_nesting_is_refused_not_a_crash() -> None:
    for path in (("metadata",), ("metadata", "k"), ("tuning", "target_modules"), ("seed",),
                 ("integrations",)):
        try:
            JobSpec.model_validate(_with(path, _deep(5000)))
        except ValidationError:
            continue
        raise AssertionError(f"{path}: a 5000-deep list was accepted")
