"""The inference process's slots: a full queue answers 429 at once, a wait past its limit
answers 503, both with Retry-After; no request waits forever."""

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

from inference.slots import Busy, Slots


def test_full_queue_is_429_and_long_wait_is_503() -> None:
    async def scenario() -> None:
        slots = Slots(running=1, waiting=1, wait_seconds=0.3)
        await slots.enter()  # the one slot, held
        waiting = asyncio.create_task(slots.enter())
        await asyncio.sleep(0.05)
        with pytest.raises(Busy) as full:
            await slots.enter()  # the queue's one place is taken
        assert full.value.status == 429 and full.value.retry_after >= 1
        with pytest.raises(Busy) as timed_out:
            await waiting
        assert timed_out.value.status == 503 and timed_out.value.retry_after >= 1
        slots.leave()
        await asyncio.wait_for(slots.enter(), timeout=1)  # free again: served at once
        assert slots.describe() == {"slots": 1, "in_use": 1, "queued": 0, "refused": 2}

    # A loop of its own in a thread of its own: a browser test's sync Playwright may have
    # left this thread's event loop running.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, scenario()).result()
