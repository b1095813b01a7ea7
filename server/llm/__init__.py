"""Real AI providers (today: OpenRouter) behind :class:`server.loop.provider.ModelProvider`.

Modules: :mod:`.sse` (Sans-I/O event-stream decoder), :mod:`.chunks` (Sans-I/O
chunk assembly), :mod:`.errors` (upstream error mapping and key redaction),
:mod:`.openrouter` (the provider, the only module doing I/O).
"""

from server.llm.openrouter import OpenRouterConfig, OpenRouterProvider

__all__ = ["OpenRouterConfig", "OpenRouterProvider"]
