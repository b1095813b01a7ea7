"""Clocks: the simulator sleeps through a ``Clock`` so tests can swap in virtual time."""

from __future__ import annotations

import asyncio
from typing import Protocol

__all__ = ["Clock", "RealClock"]


class Clock(Protocol):
    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class RealClock:
    """The event loop's monotonic clock."""

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
