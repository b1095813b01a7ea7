"""Clocks: the simulator sleeps through a ``Clock`` so tests can swap in virtual time.

* :class:`RealClock` -- the running event loop's monotonic clock.
* :class:`VirtualClock` -- virtual time for tests. Installed on the running event
  loop, it makes the *whole loop* run on virtual time: ``asyncio.sleep``,
  ``asyncio.timeout``, ``call_later`` and ``loop.time()`` all see it. Whenever the
  loop has nothing ready to run and would wait for a timer, the clock jumps
  straight to that timer's deadline instead of waiting. A test of timing logic
  therefore finishes at once, and the times it observes are exact::

      async def test_first_chunk_after_300ms():
          with VirtualClock() as clock:
              await clock.sleep(0.3)
              assert clock.now() == 0.3

  Because the jump happens only when nothing is ready, every task gets to run
  before time moves on (like trio's ``MockClock(autojump_threshold=0)``). Real I/O
  still works -- the loop polls it without waiting -- but time does not wait for
  it: keep subprocesses, threads and real sockets out of virtually-timed tests.

  Installation patches two attributes of the loop instance (``time`` and its
  selector's ``select``); ``uninstall()`` (or leaving the ``with`` block) removes
  them. It works with the standard selector event loops (not uvloop).
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

__all__ = ["Clock", "RealClock", "VirtualClock"]

# asyncio never waits longer than this in one poll (BaseEventLoop's MAXIMUM_SELECT_TIMEOUT).
_MAX_POLL = 24 * 3600


class Clock(Protocol):
    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class RealClock:
    """The event loop's monotonic clock."""

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class VirtualClock:
    """Virtual time for the running event loop (see the module docstring).

    Args:
        start: the virtual time at installation, in seconds.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._selector: Any = None

    # ------------------------------------------------------------------ Clock
    def now(self) -> float:
        """The current virtual time in seconds."""
        return self._now

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` of virtual time (returns at once in wall time)."""
        self._check_installed()
        await asyncio.sleep(seconds)

    # ------------------------------------------------------------------ control
    def install(self, loop: asyncio.AbstractEventLoop | None = None) -> VirtualClock:
        """Put the loop (default: the running one) on this clock's virtual time.

        Raises:
            RuntimeError: the clock is already installed, or the loop has no selector.
        """
        if self._loop is not None:
            raise RuntimeError("this VirtualClock is already installed")
        loop = loop or asyncio.get_running_loop()
        selector = getattr(loop, "_selector", None)
        if selector is None:
            raise RuntimeError("VirtualClock needs a selector event loop (not uvloop)")
        real_select = selector.select

        def select(timeout: float | None = None) -> Any:
            events = real_select(0)
            if events or timeout == 0:
                return events
            if timeout is None:  # no timer pending: only real I/O can wake the loop
                return real_select(None)
            scheduled = getattr(loop, "_scheduled", None)
            if scheduled and timeout < _MAX_POLL:
                # Land exactly on the deadline, so observed times are exact.
                self._now = max(self._now, scheduled[0].when())
            else:
                self._now += timeout
            return []

        loop.time = self.now  # type: ignore[method-assign]
        selector.select = select
        self._loop, self._selector = loop, selector
        return self

    def uninstall(self) -> None:
        """Give the loop its real clock back."""
        if self._loop is None:
            return
        del self._loop.time  # type: ignore[attr-defined]
        del self._selector.select
        self._loop = self._selector = None

    def __enter__(self) -> VirtualClock:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.uninstall()

    def _check_installed(self) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if self._loop is None or running is not self._loop:
            raise RuntimeError(
                "VirtualClock.sleep needs the clock installed on the running loop "
                "(use `with VirtualClock() as clock:` or clock.install())"
            )
