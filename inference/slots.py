"""Generation slots: a bounded number run at once, a bounded queue waits, none waits forever.

A request past the queue's length answers 429 at once; one that waited too long for a slot
answers 503; both with Retry-After, so no client hangs on a connection nobody will serve.
"""

import asyncio
import math


class Busy(Exception):
    def __init__(self, message: str, *, status: int, retry_after: int) -> None:
        super().__init__(message)
        self.status, self.retry_after = status, retry_after


class Slots:
    def __init__(self, running: int, waiting: int, wait_seconds: float) -> None:
        self.running, self.waiting, self.wait_seconds = running, waiting, wait_seconds
        self._free = asyncio.Semaphore(running)
        self._queued = 0
        self.in_use = 0
        self.refused = 0

    def describe(self) -> dict[str, int]:
        return {"slots": self.running, "in_use": self.in_use, "queued": self._queued,
                "refused": self.refused}

    async def enter(self) -> None:
        if self._free.locked() and self._queued >= self.waiting:
            self.refused += 1
            raise Busy(f"{self._queued} requests are already waiting for one of "
                       f"{self.running} generation slots: retry later.", status=429,
                       retry_after=max(1, math.ceil(self.wait_seconds / 4)))
        self._queued += 1
        try:
            await asyncio.wait_for(self._free.acquire(), timeout=self.wait_seconds)
        except TimeoutError:
            self.refused += 1
            raise Busy(f"No generation slot came free within {self.wait_seconds:g} s: "
                       "retry later.", status=503,
                       retry_after=max(1, math.ceil(self.wait_seconds / 4))) from None
        finally:
            self._queued -= 1
        self.in_use += 1

    def leave(self) -> None:
        self.in_use -= 1
        self._free.release()
