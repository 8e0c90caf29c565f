"""Gathers concurrent non-streaming requests for one loaded model into one `generate` call.

Requests join a group keyed by the model object, the adapter and the sampling settings that
`generate` applies to a whole batch (greedy, or one temperature and top_p). The first to come
leads: it waits the gather window, then for the model's lock, and only then closes the
group, so requests that arrive while another generation runs join the next batch. A seed or
stop strings keep a request alone: a seed's random stream and `stop_strings`' early end
belong to one sequence.
"""

import threading
from dataclasses import dataclass, field
from typing import Any

from inference.generation import Sampling, generate, generate_batch
from inference.loaded_models import Loaded


@dataclass
class _Member:
    ids: list[int]
    max_new: int
    result: tuple[str, int, str] | None = None


@dataclass
class _Group:
    members: list[_Member] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


def batchable(sampling: Sampling) -> bool:
    return sampling.seed is None and not sampling.stop


class Batcher:
    def __init__(self, window_seconds: float, max_batch: int) -> None:
        self.window_seconds, self.max_batch = window_seconds, max_batch
        self._lock = threading.Lock()
        self._open: dict[tuple[Any, ...], _Group] = {}
        self.batches = 0
        self.batched_requests = 0
        self.largest_batch = 0

    def describe(self) -> dict[str, int]:
        return {"batches": self.batches, "batched_requests": self.batched_requests,
                "largest_batch": self.largest_batch}

    def generate(self, loaded: Loaded, adapter: str | None, ids: list[int], sampling: Sampling,
                 max_new: int) -> tuple[str, int, str]:
        """(text, completion tokens, finish_reason), as `generation.generate` gives them."""
        if not batchable(sampling):
            return generate(loaded, adapter, ids, sampling, max_new)
        greedy = sampling.temperature <= 0
        key = (id(loaded), adapter, greedy, None if greedy else sampling.temperature,
               None if greedy else sampling.top_p)
        member = _Member(ids, max_new)
        with self._lock:
            group = self._open.get(key)
            if group is not None and len(group.members) < self.max_batch:
                group.members.append(member)
                leader = False
            else:
                group = self._open[key] = _Group([member])
                leader = True
        if leader:
            self._lead(key, group, loaded, adapter, sampling)
        group.done.wait()
        if group.error is not None:
            raise group.error
        assert member.result is not None
        return member.result

    def _lead(self, key: tuple[Any, ...], group: _Group, loaded: Loaded, adapter: str | None,
              sampling: Sampling) -> None:
        try:
            if self.window_seconds > 0:
                group.done.wait(self.window_seconds)  # never set yet: a plain timed sleep
            with loaded.lock:
                with self._lock:
                    if self._open.get(key) is group:
                        del self._open[key]
                members = group.members
                results = generate_batch(loaded, adapter, [(m.ids, m.max_new) for m in members],
                                         sampling, locked=True)
            for m, r in zip(members, results, strict=True):
                m.result = r
            self.batches += 1
            self.batched_requests += len(members)
            self.largest_batch = max(self.largest_batch, len(members))
        except BaseException as exc:  # every member raises it (AdapterGone: each retries)
            with self._lock:
                if self._open.get(key) is group:
                    del self._open[key]
            group.error = exc
        finally:
            group.done.set()
