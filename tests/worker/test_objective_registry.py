"""Every objective the spec accepts has a registered workflow, and names are unique."""

import pytest

from tunesmith.spec.objectives import METHOD_CLASSES
from worker import registry


def test_every_objective_in_the_spec_has_a_workflow() -> None:
    registry.load_all()
    declared = {cls.model_fields["type"].default for cls in METHOD_CLASSES}
    assert declared == set(registry.OBJECTIVES), declared ^ set(registry.OBJECTIVES)


def test_registering_a_name_twice_fails_loudly() -> None:
    registry.load_all()
    with pytest.raises(ValueError, match="registered twice"):
        registry.register_objective("supervised")(lambda ctx: None)


def test_unknown_names_fail_loudly() -> None:
    with pytest.raises(KeyError, match="known"):
        registry.objective("nope")
    with pytest.raises(KeyError, match="known"):
        registry.tuning("nope")
