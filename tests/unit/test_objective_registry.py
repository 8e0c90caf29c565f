"""Every objective and tuning class of the spec has its worker code registered, keyed by the
class; a class registered twice or a job whose class has none fails loudly."""

from typing import Literal

import pytest

from tunesmith.spec.objectives import METHOD_CLASSES, SupervisedMethod
from tunesmith.spec.tunings import LoraTuning, TuningSpec
from worker import registry


def test_every_objective_in_the_spec_has_a_workflow() -> None:
    registry.load_all()
    assert set(METHOD_CLASSES) == set(registry.OBJECTIVES), \
        set(METHOD_CLASSES) ^ set(registry.OBJECTIVES)


def test_registering_a_class_twice_fails_loudly() -> None:
    registry.load_all()
    with pytest.raises(ValueError, match="'supervised' is registered twice"):
        registry.register_objective(SupervisedMethod)(lambda ctx, method: None)
    with pytest.raises(ValueError, match="'lora' is registered twice"):
        registry.register_tuning(registry.tuning(LoraTuning))


class UnknownTuning(TuningSpec, rate=1e-4):
    type: Literal["unknown"] = "unknown"


def test_unregistered_classes_fail_loudly() -> None:
    with pytest.raises(KeyError, match="no tuning is registered for 'unknown'; known: "):
        registry.tuning(UnknownTuning)
