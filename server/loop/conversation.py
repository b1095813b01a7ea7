"""Per-session conversation context in the shape an OpenAI-compatible API needs."""

from __future__ import annotations

from typing import Any

from server.loop.jsonutil import dumps
from server.loop.provider import ToolCall

__all__ = ["Conversation"]


class Conversation:
    """System prompt plus user, assistant and tool messages, bounded in length.

    When more than ``max_messages`` messages (system prompt excluded) are held, the
    oldest are dropped -- always whole exchanges: the kept history starts at a user
    message, so an assistant ``tool_calls`` message is never separated from its
    ``tool`` results.
    """

    def __init__(self, system_prompt: str | None, max_messages: int) -> None:
        self.system_prompt = system_prompt
        self.max_messages = max_messages
        self.messages: list[dict[str, Any]] = []

    def to_openai(self) -> list[dict[str, Any]]:
        head = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return head + self.messages

    def add_user(self, content: str) -> None:
        self.messages.append({"role": "user", "content": content})
        self._trim()

    def add_assistant(self, content: str, tool_calls: list[ToolCall] | None = None) -> None:
        msg: dict[str, Any] = {"role": "assistant", "content": content if content or not tool_calls else None}
        if tool_calls:
            msg["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.raw_arguments}}
                for c in tool_calls
            ]
        self.messages.append(msg)

    def add_tool_result(self, tool_call_id: str, result: Any, is_error: bool = False) -> None:
        content = result if isinstance(result, str) else dumps(result).decode()
        if is_error:
            content = f"Error: {content}"
        self.messages.append({"role": "tool", "tool_call_id": tool_call_id, "content": content})

    def _trim(self) -> None:
        if len(self.messages) <= self.max_messages:
            return
        excess = len(self.messages) - self.max_messages
        # Cut at the first user message at or after the excess point.
        cut = next(
            (i for i in range(excess, len(self.messages)) if self.messages[i]["role"] == "user"),
            len(self.messages) - 1,
        )
        del self.messages[:cut]
