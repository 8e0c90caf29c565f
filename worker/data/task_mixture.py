"""A multitask job's training mixture: named tasks, each a file of supervised rows and a weight.

An epoch of the mixture has as many rows as all tasks together; task i takes the share
w_i / Σw of them (at least one row, so no task is starved), drawn by cycling through a seeded
shuffle of its rows. So an up-weighted task repeats its rows evenly, a down-weighted one
trains on a seeded subset of them, and the epoch length does not depend on the weights.
(`datasets.interleave_datasets` was the other way: "first_exhausted" ends the epoch with the
smallest task and "all_exhausted" repeats until the largest is seen, so a small weight on a
big task would stretch the epoch out of all proportion.)
"""

import random
from dataclasses import dataclass
from typing import Any

from worker.training.failures import InvalidData

# The task name the job's own `training_file` takes in the mixture, with weight 1.
TRAINING_FILE_TASK = "training_file"


@dataclass(frozen=True)
class TaskData:
    name: str
    weight: float
    rows: list[dict[str, Any]]  # rows as trl's SFTTrainer reads them (worker.data.sft_data)
    param: str  # the spec field that names its file, for errors


def shares(tasks: list[TaskData], total: int) -> dict[str, int]:
    """Rows per task in an epoch of `total` rows: proportional to weight (largest remainder),
    at least one each."""
    weight = sum(t.weight for t in tasks)
    exact = {t.name: total * t.weight / weight for t in tasks}
    counts = {name: max(1, int(x)) for name, x in exact.items()}
    by_remainder = sorted(tasks, key=lambda t: exact[t.name] - int(exact[t.name]), reverse=True)
    for task in by_remainder[:max(0, total - sum(counts.values()))]:
        counts[task.name] += 1
    return counts


def sample_mixture(tasks: list[TaskData], counts: dict[str, int],
                   seed: int) -> list[dict[str, Any]]:
    """One epoch of the mixture with `counts` rows of each task, shuffled; each row carries
    its task's name in "task"."""
    rng = random.Random(seed)
    mixture: list[dict[str, Any]] = []
    for task in tasks:
        order = list(range(len(task.rows)))
        rng.shuffle(order)
        mixture += [{**task.rows[order[i % len(order)]], "task": task.name}
                    for i in range(counts[task.name])]
    rng.shuffle(mixture)
    return mixture


def _shape(row: dict[str, Any]) -> str:
    if "messages" in row:
        return "chat"
    return "chat prompt/completion" if isinstance(row["prompt"], list) else "text"


def unify_shapes(tasks: list[TaskData]) -> list[TaskData]:
    """One trainer trains one row shape; make every task's rows the same shape.

    Chat `messages` rows and chat prompt/completion rows (alpaca rows of a model with a chat
    template) unify as messages, where messages survived conversion (the template marks
    what the assistant says, or the loss is on everything). Plain-text prompt/completion rows
    cannot join chat rows without changing what the model sees: that is the user's choice.
    """
    shapes = {t.name: {_shape(r) for r in t.rows} for t in tasks}
    found = set().union(*shapes.values())
    if "text" in found and len(found) > 1:
        text = next(t for t in tasks if "text" in shapes[t.name])
        chat = next(t for t in tasks if shapes[t.name] - {"text"})
        raise InvalidData(
            f"Task '{text.name}' has plain-text prompt/completion rows but task '{chat.name}' "
            "has chat rows (messages, or instruction/output rows, which use the model's chat "
            "template); one job trains one kind of row. Convert one of them: prompt/completion "
            "rows to messages [user: prompt, assistant: completion], or the chat rows to "
            "prompt/completion text.", text.param)
    if found == {"chat", "chat prompt/completion"}:
        # Messages survive conversion (worker.data.sft_data.to_sft_row) only where their loss is
        # the one the job asks for (the template marks assistant turns, or the loss is on
        # every token), so prompt/completion rows joined into messages train the same way.
        return [TaskData(t.name, t.weight,
                         [r if "messages" in r else {"messages": r["prompt"] + r["completion"],
                                                       "tools": r.get("tools")}
                          for r in t.rows], t.param) for t in tasks]
    return tasks
