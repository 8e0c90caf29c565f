"""Verifiable rewards for GRPO (`method.grpo.reward.type`), scored against each row's `answer`.

trl's GRPOTrainer calls a reward function as
`f(prompts=..., completions=..., completion_ids=..., **columns)`, where `columns` holds every
other dataset column, one value per completion (our `answer`), plus trl's own extras
(`trainer_state`, `log_extra`, `log_metric`). A completion is a string, or for chat
prompts a list of messages ([{"role": "assistant", "content": ...}]). The function's
`__name__` names its metric in the events (`rewards/<name>/mean`).
"""

from collections.abc import Callable
from difflib import SequenceMatcher
from typing import Any

RewardFunction = Callable[..., list[float]]


def completion_text(completion: str | list[dict[str, Any]]) -> str:
    """The text of a completion, whether plain or a list of chat messages."""
    if isinstance(completion, str):
        return completion
    return "".join(m.get("content") or "" for m in completion if m.get("role") == "assistant")


def answer_similarity(completions: list[Any], answer: list[str], **_: Any) -> list[float]:
    """difflib's similarity ratio of completion and answer, 0..1: smooth, so that a policy
    far from the answer still sees which of its samples came closer."""
    # autojunk would ignore frequent characters in texts over 200 characters: off, so long
    # completions are scored on every character.
    return [SequenceMatcher(None, completion_text(c).strip(), a.strip(), autojunk=False).ratio()
            for c, a in zip(completions, answer, strict=True)]


def contains_answer(completions: list[Any], answer: list[str], **_: Any) -> list[float]:
    """1.0 if the answer appears in the completion (ignoring case and surrounding blanks)."""
    return [float(a.strip().casefold() in completion_text(c).casefold())
            for c, a in zip(completions, answer, strict=True)]


REWARD_FUNCTIONS: dict[str, RewardFunction] = {
    "answer_similarity": answer_similarity,
    "contains_answer": contains_answer,
}
