"""Configuration: ``config.yaml`` validated into frozen settings, with environment overrides.

Precedence, highest first: environment variables (``AILOOP_<SECTION>__<KEY>``, e.g.
``AILOOP_SERVER__PORT=9000``), then the YAML file, then the defaults below. Unknown
keys are errors, so a typo is never silently ignored. Secrets never come from the
file: the OpenRouter key is read only from ``OPENROUTER_API_KEY``.

Only the composition root (``server.app``) reads settings; other layers receive
plain values.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

__all__ = ["ConfigError", "Settings", "load_settings"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    """Address to listen on. Beyond loopback, authentication is required (see auth)."""
    port: int = Field(8765, ge=0, le=65535)
    """TCP port; 0 picks a free one (printed at start)."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    validate_outgoing: bool = False
    """Debug aid: validate every outgoing notification against the generated models."""
    log_format: Literal["json", "text"] = "json"
    """json: one JSON object per line with connection and session ids."""
    log_content: bool = False
    """Debug aid: also log message contents and tool arguments/results."""
    shutdown_drain_s: float = Field(5.0, ge=0)
    """On SIGTERM/SIGINT, how long to wait for clients to receive their last frames."""


class AISettings(_Section):
    backend: Literal["simulator", "openrouter"] = "simulator"
    """Which provider does the thinking."""
    first_chunk_timeout_s: float | None = Field(60.0, gt=0)
    """Longest wait for a model step's first event (keep-alive comments don't count)."""
    idle_timeout_s: float | None = Field(60.0, gt=0)
    """Longest gap between two events of a model step."""
    turn_timeout_s: float | None = Field(600.0, gt=0)
    """Longest total provider streaming time in one turn (tool waits and pauses excluded)."""


class SimulatorSettings(_Section):
    seed: int = 0
    first_chunk_ms: float = Field(0.0, ge=0)
    chunk_interval_ms: float = Field(0.0, ge=0)
    model: str = "simulator-1"
    scenario: str = "default"
    """A built-in scenario (default, tools, faults, chatty) or a YAML file path
    (docs/simulator.md). A scenario's own ``timing:`` wins over the timing keys here."""
    first_chunk_p99_ms: float | None = Field(None, gt=0)
    """Set: the time to first chunk is lognormal with median ``first_chunk_ms``."""
    chunk_interval_p99_ms: float | None = Field(None, gt=0)
    """Set: the chunk interval is lognormal with median ``chunk_interval_ms``."""
    tokens_per_second: float | None = Field(None, gt=0)
    """Set: each chunk also waits (its tokens) / tokens_per_second."""
    load_threshold: int = Field(0, ge=0)
    load_slowdown: float = Field(0.0, ge=0)
    """Delays grow by ``1 + load_slowdown * max(0, streams - load_threshold)``; 0: off."""
    load_max_factor: float | None = Field(None, ge=1)
    keepalive_ms: float = Field(1000.0, gt=0)
    """HTTP face: interval of ``: OPENROUTER PROCESSING`` comments before the first chunk."""


class OpenRouterSettings(_Section):
    base_url: str = "https://openrouter.ai/api/v1"
    model: str = "openai/gpt-4o-mini"
    http_referer: str | None = None
    """Sent as ``HTTP-Referer`` (app attribution); not sent when unset."""
    x_title: str | None = "AILoop Interactive"
    """Sent as ``X-Title`` and ``X-OpenRouter-Title`` (app name); not sent when unset."""
    max_tokens: int = Field(4096, ge=1)
    """Default ``max_tokens``, always sent (a session's sampling may override it)."""
    temperature: float | None = Field(None, ge=0, le=2)
    """Default temperature; not sent when unset (the model's default applies)."""
    top_p: float | None = Field(None, gt=0, le=1)
    """Default top_p; not sent when unset."""
    tool_choice: Literal["auto", "none"] = "auto"
    """Sent with the tools whenever a session declared any."""
    max_retries: int = Field(2, ge=0, le=10)
    """Extra attempts after a retryable failure, only before the first chunk."""
    retry_base_delay_s: float = Field(0.5, ge=0)
    """First backoff delay; doubles per attempt, with jitter."""
    retry_max_delay_s: float = Field(8.0, ge=0)
    """Cap on one backoff delay; a longer Retry-After is not waited for (the error,
    with its retry hint, goes to the client instead)."""
    connect_timeout_s: float = Field(10.0, gt=0)
    """TCP/TLS connect timeout (also the wait for a free pooled connection)."""
    read_timeout_s: float | None = Field(120.0, gt=0)
    """Longest silence on the socket (keep-alive comments count); a backstop behind
    the loop's first-chunk and idle timeouts. None disables it."""
    max_connections: int = Field(100, ge=1)
    """Pool size shared by all sessions."""
    max_keepalive_connections: int = Field(20, ge=0)


class SessionSettings(_Section):
    max_history_messages: int = Field(200, ge=2)
    """Conversation messages kept per session (system prompt excluded); older whole
    exchanges are dropped."""
    resume_grace_s: float = Field(0.0, ge=0)
    """How long a session outlives its connection, detached, waiting for
    attachSession; 0 releases it at once."""
    replay_log_size: int = Field(1000, ge=1)
    """Notifications kept per session for replay after a reconnect."""
    max_lifetime_s: float = Field(0.0, ge=0)
    """A session older than this is ended (reason max_lifetime); 0 disables."""


class LimitSettings(_Section):
    max_frame_bytes: int = Field(1_048_576, ge=1024)
    """Largest text frame; a larger one closes the connection with 1009."""
    max_message_chars: int = Field(100_000, ge=1)
    """Longest sendUserMessage content (INVALID_PARAMS beyond)."""
    max_sessions_per_connection: int = Field(16, ge=1)
    max_sessions: int = Field(10_000, ge=1)
    """Sessions per server process, detached ones included."""
    max_batch_size: int = Field(64, ge=1)
    """Requests in one JSON-RPC batch."""
    max_tools_per_session: int = Field(128, ge=0)
    max_connections: int = Field(10_000, ge=1)
    """Open WebSockets per process; more are refused at the handshake with HTTP 503."""
    max_pending_tool_calls: int = Field(64, ge=1)
    """Tool calls one model step may ask for; more end the turn with LIMIT_REACHED."""
    requests_per_s: float = Field(50.0, ge=0)
    """Sustained requests per connection (token bucket); 0 disables."""
    request_burst: int = Field(100, ge=1)
    idle_timeout_s: float = Field(600.0, ge=0)
    """Close a connection with no frame either way for this long; 0 disables."""
    tool_result_timeout_s: float = Field(600.0, ge=0)
    """How long a turn waits for tool results; 0 waits for ever."""
    outbound_high_water: int = Field(256, ge=1)
    """Queued frames per connection past which text chunks are merged."""
    outbound_max_bytes: int = Field(8 << 20, ge=1024)
    """Queued bytes per connection past which it is closed with 1008."""
    heartbeat_interval_s: float = Field(20.0, ge=0)
    """WebSocket ping interval (and pong timeout); 0 disables."""


class AuthSettings(_Section):
    enabled: bool = False
    """Require a bearer token. Tokens come from the AILOOP_AUTH_TOKENS environment
    variable (comma-separated) and/or ``token_hashes_file``; never from this file."""
    token_hashes_file: str | None = None
    """File of accepted tokens' SHA-256 hex digests, one per line (# comments)."""
    allowed_origins: list[str] = []
    """Origins a browser may connect from (exact, e.g. https://app.example.com, or
    "*"). Empty: only same-origin pages; clients that send no Origin are allowed."""
    allow_unauthenticated_non_loopback: bool = False
    """Allow binding to a non-loopback address with authentication off."""


class StoreSettings(_Section):
    """Where sessions live. `memory` (the default): in this process only, nothing else to
    install. `redis`: shared through one Redis, so that several processes and nodes serve
    one protocol: a client may attachSession on any of them (docs/operations.md,
    "Several processes and nodes (Redis)")."""

    backend: Literal["memory", "redis"] = "memory"
    """memory: sessions live and die with this process; redis: registry, conversation and
    replay log are shared through `redis_url`."""
    redis_url: str = "redis://127.0.0.1:6379/0"
    """Redis to share sessions through (redis:// or rediss://, or unix:///path.sock). A URL
    with a password belongs in the environment (AILOOP_STORE__REDIS_URL), not in the file."""
    key_prefix: str = Field("ailoop:", min_length=1, max_length=64)
    """Prefix of every key this server writes; processes sharing sessions use the same one."""
    heartbeat_s: float = Field(1.0, gt=0, le=60)
    """How often a process renews its liveness key in Redis."""
    owner_timeout_s: float = Field(5.0, gt=0)
    """A process that has not renewed its liveness key for this long counts as dead: another
    process takes over its sessions, ending a turn in flight with SESSION_OWNER_LOST.
    Keep it several times heartbeat_s."""
    ttl_margin_s: float = Field(10.0, ge=1)
    """A session's keys expire session.resume_grace_s plus this long after their owner last
    renewed them (renewed every third of that while the owner lives); ended sessions'
    keys go at once (their log after this margin, for relays still reading it)."""
    op_timeout_s: float = Field(5.0, gt=0)
    """Longest wait for Redis, or for the process owning a session, in a request; past it
    the request fails with STORE_UNAVAILABLE."""


class Settings(BaseSettings):
    """Everything the server can be configured with (see docs/configuration.md)."""

    model_config = SettingsConfigDict(
        env_prefix="AILOOP_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    server: ServerSettings = ServerSettings()
    ai: AISettings = AISettings()
    simulator: SimulatorSettings = SimulatorSettings()
    openrouter: OpenRouterSettings = OpenRouterSettings()
    session: SessionSettings = SessionSettings()
    limits: LimitSettings = LimitSettings()
    auth: AuthSettings = AuthSettings()
    store: StoreSettings = StoreSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment overrides the file (passed as init kwargs).
        return (env_settings, init_settings)

    @property
    def auth_tokens(self) -> list[SecretStr]:
        raw = os.environ.get("AILOOP_AUTH_TOKENS", "")
        return [SecretStr(t.strip()) for t in raw.split(",") if t.strip()]

    @property
    def openrouter_api_key(self) -> SecretStr | None:
        key = os.environ.get("OPENROUTER_API_KEY", "").strip()
        return SecretStr(key) if key else None


class ConfigError(Exception):
    """The configuration is invalid; the message names the file and the bad key."""


def _format(exc: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(root)"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        lines.append(f"  {key}: {msg}")
    return "\n".join(lines)


def load_settings(path: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Load and validate settings from a YAML file (optional) plus the environment.

    Raises:
        ConfigError: the file is missing or unreadable, or a key is unknown or invalid.
    """
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read configuration {source}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"configuration {source} is not valid YAML: {exc}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"configuration {source} must be a mapping of sections")
        if isinstance(loaded.get("auth"), dict) and "tokens" in loaded["auth"]:
            raise ConfigError(
                f"invalid configuration in {source}:\n  auth.tokens: tokens are never read from the "
                "file; set AILOOP_AUTH_TOKENS or auth.token_hashes_file"
            )
        if isinstance(loaded.get("openrouter"), dict) and "api_key" in loaded["openrouter"]:
            raise ConfigError(
                f"invalid configuration in {source}:\n  openrouter.api_key: secrets are never read "
                "from the file; set the OPENROUTER_API_KEY environment variable"
            )
        data = loaded
    for section, values in overrides.items():
        data = {**data, section: {**data.get(section, {}), **values}}
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_format(exc, source)) from None


def _env_name(section: str, key: str) -> str:
    return f"AILOOP_{section.upper()}__{key.upper()}"


def render_config_doc() -> str:
    """docs/configuration.md, generated from these models (``python -m server.config``)."""
    out = [
        "<!-- GENERATED from server/config.py by `python -m server.config` -- DO NOT EDIT. -->",
        "",
        "# Configuration",
        "",
        "The server reads a YAML file (`python -m server --config FILE`, default `config.yaml`) and",
        "validates it at start: an unknown key or a bad value stops it with a message naming the key",
        "(exit code 2). Every key can be overridden by an environment variable",
        "`AILOOP_<SECTION>__<KEY>` (double underscore), which wins over the file. Lists and",
        "nulls are given to environment variables as JSON (`AILOOP_AUTH__ALLOWED_ORIGINS='[\"https://app.example\"]'`).",
        "",
        "Secrets never come from the file:",
        "",
        "| secret | environment variable |",
        "|---|---|",
        "| OpenRouter API key (required with `ai.backend: openrouter`) | `OPENROUTER_API_KEY` |",
        "| accepted bearer tokens, comma-separated (or `auth.token_hashes_file`) | `AILOOP_AUTH_TOKENS` |",
        "",
    ]
    for section, field in Settings.model_fields.items():
        model = field.annotation
        doc = (model.__doc__ or "").strip() if model is not None else ""
        out += [f"## `{section}`", ""]
        if doc and not doc.startswith("Usage docs"):
            out += [doc, ""]
        out += ["| key | default | environment variable | meaning |", "|---|---|---|---|"]
        for key, info in model.model_fields.items():  # type: ignore[union-attr]
            default = info.get_default(call_default_factory=True)
            shown = "null" if default is None else (str(default).lower() if isinstance(default, bool) else default)
            meaning = " ".join((info.description or "").split())
            out.append(f"| `{section}.{key}` | `{shown}` | `{_env_name(section, key)}` | {meaning} |")
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


if __name__ == "__main__":
    import sys

    target = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
    text = render_config_doc()
    if "--check" in sys.argv:
        ok = target.exists() and target.read_text(encoding="utf-8") == text
        print("docs/configuration.md is up to date" if ok else "docs/configuration.md drifted; run `make regen`")
        raise SystemExit(0 if ok else 1)
    target.write_text(text, encoding="utf-8")
    print("wrote docs/configuration.md")
