"""InteractiveAI: the AI loop for Python users who want it without the server.

::

    ai = InteractiveAI(SimulatorProvider())
    session = await ai.start_session(system_prompt="Be brief.", tools=[...])
    events = await session.run_turn("What's the weather?", tools={"get_weather": lambda args: {"tempC": 21}})
    text = "".join(e.text for e in events if isinstance(e, AIChunk))
    await session.stop()

Or drive it by hand: ``send_user_message``, iterate ``session.events()``, and
``provide_tool_result`` when an ``ToolCallGenerated`` event arrives.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

from server.loop.engine import AILoop, LoopConfig
from server.loop.events import AIChunk, LoopEvent, SessionEnded, StatusChanged, ToolCallGenerated
from server.loop.provider import ModelProvider

__all__ = ["AISession", "InteractiveAI"]


class AISession:
    """One session: an AILoop whose events go to a queue you read."""

    def __init__(self, loop_factory: Callable[[Callable[[LoopEvent], None]], AILoop]) -> None:
        self._queue: asyncio.Queue[LoopEvent] = asyncio.Queue()
        self.loop = loop_factory(self._queue.put_nowait)

    async def events(self) -> AsyncIterator[LoopEvent]:
        """Every event of the session, in order, until it ends."""
        while True:
            ev = await self._queue.get()
            yield ev
            if isinstance(ev, SessionEnded):
                return

    async def send_user_message(self, content: str) -> str:
        turn_id = self.loop.prepare_turn(content)
        self.loop.begin_turn()
        return turn_id

    async def provide_tool_result(self, tool_call_id: str, result: Any, is_error: bool = False) -> int:
        pending = self.loop.provide_tool_result(tool_call_id, result, is_error)
        self.loop.continue_turn()
        return pending

    async def run_turn(
        self, content: str, tools: Mapping[str, Callable[[dict[str, Any]], Any]] | None = None
    ) -> list[LoopEvent]:
        """Send a message, run requested tools with ``tools[name](arguments)`` (sync or
        async; an exception becomes an error result), and return the turn's events."""
        await self.send_user_message(content)
        out: list[LoopEvent] = []
        async for ev in self.events():
            out.append(ev)
            if isinstance(ev, ToolCallGenerated):
                fn = (tools or {}).get(ev.tool_name)
                try:
                    if fn is None:
                        raise LookupError(f"no tool named {ev.tool_name}")
                    result = fn(ev.arguments)
                    if inspect.isawaitable(result):
                        result = await result
                    await self.provide_tool_result(ev.tool_call_id, result)
                except Exception as exc:  # the tool failed: tell the model
                    await self.provide_tool_result(ev.tool_call_id, str(exc), is_error=True)
            elif isinstance(ev, StatusChanged) and ev.status == "idle":
                return out
        return out

    async def cancel_turn(self) -> str | None:
        return await self.loop.cancel_turn()

    def pause(self) -> None:
        self.loop.pause()

    def resume(self) -> None:
        self.loop.resume()

    async def stop(self) -> None:
        await self.loop.stop("client_stop")


class InteractiveAI:
    """Factory of sessions sharing one provider."""

    def __init__(self, provider: ModelProvider, config: LoopConfig = LoopConfig()) -> None:
        self.provider = provider
        self.config = config

    async def start_session(
        self,
        *,
        system_prompt: str | None = None,
        tools: Sequence[Mapping[str, Any]] = (),
        model: str | None = None,
        sampling: Mapping[str, Any] | None = None,
    ) -> AISession:
        def make(emit: Callable[[LoopEvent], None]) -> AILoop:
            return AILoop(self.provider, emit, system_prompt=system_prompt, tools=tools,
                          model=model, sampling=sampling, config=self.config)

        session = AISession(make)
        session.loop.start()
        return session

    async def aclose(self) -> None:
        await self.provider.aclose()


def text_of(events: Sequence[LoopEvent]) -> str:
    """Concatenated text of the chunks among ``events``."""
    return "".join(e.text for e in events if isinstance(e, AIChunk))
