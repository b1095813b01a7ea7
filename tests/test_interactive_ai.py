"""InteractiveAI: the loop without the server."""

from __future__ import annotations

import asyncio

from server.loop.events import AIChunk, LoopError, SessionStarted, StatusChanged, ToolCallGenerated
from server.loop.interactive import InteractiveAI, text_of
from simulator import SimulatorProvider

TOOLS = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]


async def test_run_turn_with_a_tool():
    ai = InteractiveAI(SimulatorProvider())
    s = await ai.start_session(system_prompt="Be brief.", tools=TOOLS)

    async def add(args):
        await asyncio.sleep(0)
        return args["a"] + args["b"]

    events = await s.run_turn('/sim tool add {"a": 2, "b": 3}', tools={"add": add})
    calls = [e for e in events if isinstance(e, ToolCallGenerated)]
    assert [(c.tool_name, c.arguments) for c in calls] == [("add", {"a": 2, "b": 3})]
    assert text_of(events) == "Tool add returned: 5"
    assert [e.status for e in events if isinstance(e, StatusChanged)] == ["streaming", "awaiting_tool_results", "streaming", "idle"]
    # The conversation is kept in OpenAI shape.
    roles = [m["role"] for m in s.loop.conversation.to_openai()]
    assert roles == ["system", "user", "assistant", "tool", "assistant"]
    assert s.loop.conversation.messages[1]["content"] is None and s.loop.conversation.messages[1]["tool_calls"]
    await s.stop()
    assert isinstance(events[0], SessionStarted)
    seen = [e async for e in s.events()]
    assert [e.name for e in seen] == ["ai_loop.session_ended"]


async def test_failing_tool_is_reported_to_the_model_and_errors_are_events():
    s = await InteractiveAI(SimulatorProvider()).start_session(tools=TOOLS)
    events = await s.run_turn("/sim tool add {}", tools={"add": lambda args: args["a"]})
    assert text_of(events).startswith("Tool add returned: Error: ")
    events = await s.run_turn("/sim error unavailable")
    err = [e for e in events if isinstance(e, LoopError)]
    assert len(err) == 1 and err[0].kind == "unavailable" and err[0].retryable
    final = [e for e in events if isinstance(e, AIChunk) and e.is_final]
    assert [f.finish_reason for f in final] == ["error"]


async def test_history_is_bounded():
    from server.loop.engine import LoopConfig

    s = await InteractiveAI(SimulatorProvider(), LoopConfig(max_history_messages=4)).start_session(system_prompt="sys")
    for i in range(6):
        await s.run_turn(f"message {i}")
    msgs = s.loop.conversation.to_openai()
    assert msgs[0] == {"role": "system", "content": "sys"}
    assert len(msgs) <= 5 and msgs[1]["role"] == "user"
    assert msgs[-2]["content"] == "message 5"
