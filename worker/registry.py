"""Registries: each objective and tuning module registers its worker code in one line,
keyed by the spec class it implements (tunesmith/spec declares the facts; this is the code).

A class registered twice, or a job whose spec class has no entry, fails loudly; a test
checks that every class of the spec's unions has an entry here.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Literal, Protocol, TypeVar

from tunesmith.spec.objectives import MethodSpec
from tunesmith.spec.tunings import TuningSpec

if TYPE_CHECKING:
    from worker.training.context import JobContext

# What a model is loaded as: a causal LM, or a one-output sequence classifier (the reward
# and value models of RLHF).
ModelTask = Literal["causal_lm", "seq_cls"]

M = TypeVar("M", bound=MethodSpec)
T = TypeVar("T", bound=TuningSpec)
T_in = TypeVar("T_in", bound=TuningSpec, contravariant=True)

# An objective's training: the job's context and its method, typed as the class it registered.
ObjectiveRun = Callable[["JobContext", M], None]


class LoadOptions(Protocol[T_in]):
    """Extra `from_pretrained` kwargs the tuning needs (QLoRA's quantisation)."""

    def __call__(self, tuning: T_in, ctx: "JobContext", /) -> dict[str, Any]: ...


class Wrap(Protocol[T_in]):
    """Wrap the loaded model so that what the tuning trains is what trains."""

    def __call__(self, model: Any, tuning: T_in, task: ModelTask, ctx: "JobContext", /) -> Any: ...


class Save(Protocol):
    """Write the trained result to `folder` in the format DESIGN §5 promises; returns its
    artifact kind ("peft_adapter", "full_model", ...)."""

    def __call__(self, model: Any, tokenizer: Any, folder: Path, task: ModelTask,
                 ctx: "JobContext", /) -> str: ...


def no_load_options(tuning: TuningSpec, ctx: "JobContext", /) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class TuningPlan(Generic[T]):
    """How a tuning changes a model: load options, wrapping, saving (its facts, such as
    its default learning rate, are its spec class's)."""

    spec: type[T]
    apply: Wrap[T]
    save: Save
    load_kwargs: LoadOptions[T] = no_load_options

    @property
    def name(self) -> str:
        return self.spec.type_name()

    @property
    def default_learning_rate(self) -> float:
        return self.spec.default_learning_rate

    @property
    def supports_gradient_checkpointing(self) -> bool:
        return self.spec.activation_checkpointing


OBJECTIVES: dict[type[MethodSpec], ObjectiveRun[Any]] = {}
TUNINGS: dict[type[TuningSpec], TuningPlan[Any]] = {}


def register_objective(spec: type[M]) -> Callable[[ObjectiveRun[M]], ObjectiveRun[M]]:
    def decorator(run: ObjectiveRun[M]) -> ObjectiveRun[M]:
        if spec in OBJECTIVES:
            raise ValueError(f"objective '{spec.type_name()}' is registered twice")
        OBJECTIVES[spec] = run
        return run

    return decorator


def register_tuning(plan: TuningPlan[T]) -> TuningPlan[T]:
    if plan.spec in TUNINGS:
        raise ValueError(f"tuning '{plan.name}' is registered twice")
    TUNINGS[plan.spec] = plan
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


def run_objective(ctx: "JobContext") -> None:
    """Train the job's method with the objective registered for its spec class."""
    method = ctx.spec.method
    load_all()
    if type(method) not in OBJECTIVES:
        raise KeyError(f"no objective is registered for '{method.type_name()}'; known: "
                       f"{sorted(cls.type_name() for cls in OBJECTIVES)}")
    OBJECTIVES[type(method)](ctx, method)


def tuning(spec: type[T]) -> TuningPlan[T]:
    load_all()
    if spec not in TUNINGS:
        raise KeyError(f"no tuning is registered for '{spec.type_name()}'; known: "
                       f"{sorted(cls.type_name() for cls in TUNINGS)}")
    return TUNINGS[spec]
