"""Registries: each objective and tuning module registers itself in one line.

A name registered twice, or a job naming an unregistered one, fails loudly; a test checks
that every variant of the spec has an entry here.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from worker.context import JobContext

ObjectiveRun = Callable[["JobContext"], None]


@dataclass(frozen=True)
class TuningPlan:
    """How a tuning changes a model: load options, wrapping, saving, and its defaults."""

    name: str
    # Extra `from_pretrained` kwargs (quantisation for QLoRA).
    load_kwargs: Callable[[Any, "JobContext"], dict[str, Any]]
    # Wrap the loaded model; `task` is "causal_lm" or "seq_cls" (reward and value models).
    apply: Callable[[Any, Any, str, "JobContext"], Any]
    # Write the trained result to a folder in the format DESIGN §5 promises.
    save: Callable[[Any, Any, Any, Any, "JobContext"], str]
    default_learning_rate: float
    # Prefix-style tunings break with gradient checkpointing (the prefix cache is dropped).
    supports_gradient_checkpointing: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


OBJECTIVES: dict[str, ObjectiveRun] = {}
TUNINGS: dict[str, TuningPlan] = {}


def register_objective(name: str) -> Callable[[ObjectiveRun], ObjectiveRun]:
    def decorator(run: ObjectiveRun) -> ObjectiveRun:
        if name in OBJECTIVES:
            raise ValueError(f"objective '{name}' is registered twice")
        OBJECTIVES[name] = run
        return run

    return decorator


def register_tuning(plan: TuningPlan) -> TuningPlan:
    if plan.name in TUNINGS:
        raise ValueError(f"tuning '{plan.name}' is registered twice")
    TUNINGS[plan.name] = plan
    return plan


def load_all() -> None:
    """Import every objective and tuning module, so each registers itself."""
    import importlib
    import pkgutil

    import worker.objectives
    import worker.tunings

    for package in (worker.objectives, worker.tunings):
        for module in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{package.__name__}.{module.name}")


def objective(name: str) -> ObjectiveRun:
    load_all()
    if name not in OBJECTIVES:
        raise KeyError(f"no objective '{name}' is registered; known: {sorted(OBJECTIVES)}")
    return OBJECTIVES[name]


def tuning(name: str) -> TuningPlan:
    load_all()
    if name not in TUNINGS:
        raise KeyError(f"no tuning '{name}' is registered; known: {sorted(TUNINGS)}")
    return TUNINGS[name]
