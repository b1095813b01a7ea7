# GENERATED from spec/protocol.schema.json (sha256 6a83495d8d61ff821f7db0277bb7b4f8675fb5b9e2ff4ed0981c2fb47f0a0557) -- DO NOT EDIT.
# Regenerate with `python -m spec.codegen` (or `make regen`).

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel


class AILoopInteractiveProtocol(RootModel[Any]):
    root: Annotated[Any, Field(title="AILoop Interactive protocol")]
    """
    JSON-RPC 2.0 over one WebSocket (`/ws`, text frames, one JSON value per frame). The client starts sessions, sends user messages and tool results; the server streams each session's output as ordered notifications. This file is the single source of truth: the pydantic models (spec/models.py) and the protocol reference (docs/protocol.md) are generated from it.
    """


class TurnId(RootModel[str]):
    root: Annotated[str, Field(max_length=128, min_length=1, title="TurnId")]
    """
    Opaque id of one turn (one user message and everything the model does in answer to it).
    """


class SessionStatus(StrEnum):
    """
    The state of a session. Allowed transitions are listed in `x-state-machine` at the root of this schema.
    """

    started = "started"
    idle = "idle"
    streaming = "streaming"
    awaiting_tool_results = "awaiting_tool_results"
    paused = "paused"
    ended = "ended"


class FinishReason(StrEnum):
    """
    Why a message ended. `tool_calls`: the model step ended by asking for tools and the turn goes on once every call has a result. `stop`, `length`, `cancelled` and `error` end the turn.
    """

    stop = "stop"
    length = "length"
    tool_calls = "tool_calls"
    cancelled = "cancelled"
    error = "error"


class Usage(BaseModel):
    """
    Token usage of one model step, when the provider reports it.
    """

    model_config = ConfigDict(
        extra="forbid",
    )
    promptTokens: Annotated[int, Field(ge=0)]
    completionTokens: Annotated[int, Field(ge=0)]
    totalTokens: Annotated[int, Field(ge=0)]


class JsonObject(BaseModel):
    """
    Any JSON object.
    """

    model_config = ConfigDict(
        extra="allow",
    )


class FunctionDefinition(BaseModel):
    """
    A function the model may call (OpenAI function-tool format).
    """

    model_config = ConfigDict(
        extra="forbid",
    )
    name: Annotated[str, Field(pattern="^[A-Za-z0-9_-]{1,64}$")]
    """
    Function name: 1 to 64 letters, digits, `_` or `-`.
    """
    description: Annotated[str | None, Field(max_length=4096)] = None
    parameters: JsonObject | None = None
    """
    JSON Schema of the arguments object.
    """
    strict: bool | None = None


class Tool(BaseModel):
    """
    A tool declared by the client at startSession and executed by the client.
    """

    model_config = ConfigDict(
        extra="forbid",
    )
    type: Literal["function"]
    function: FunctionDefinition


class StopSequence(RootModel[str]):
    root: Annotated[str, Field(max_length=256, title="StopSequence")]


class SamplingOptions(BaseModel):
    """
    Sampling options passed to the model provider. Omitted fields take the server's defaults.
    """

    model_config = ConfigDict(
        extra="forbid",
    )
    temperature: Annotated[float | None, Field(ge=0.0, le=2.0)] = None
    topP: Annotated[float | None, Field(ge=0.0, le=1.0)] = None
    maxTokens: Annotated[int | None, Field(ge=1, le=1000000)] = None
    stop: Annotated[list[StopSequence] | None, Field(max_length=4)] = None
    seed: int | None = None
    presencePenalty: Annotated[float | None, Field(ge=-2.0, le=2.0)] = None
    frequencyPenalty: Annotated[float | None, Field(ge=-2.0, le=2.0)] = None


class ClientInfo(BaseModel):
    """
    Who the client is (free text, for logs).
    """

    model_config = ConfigDict(
        extra="forbid",
    )
    name: Annotated[str, Field(max_length=256)]
    version: Annotated[str | None, Field(max_length=64)] = None


class ServerInfo(BaseModel):
    """
    Who the server is.
    """

    model_config = ConfigDict(
        extra="forbid",
    )
    name: str
    version: str


class Capabilities(BaseModel):
    """
    Optional features this server supports.
    """

    model_config = ConfigDict(
        extra="forbid",
    )
    batches: bool
    """
    JSON-RPC batches are accepted.
    """
    pauseResume: bool
    cancelTurn: bool
    parallelToolCalls: bool
    backends: list[str]
    """
    The AI backend this server runs on (`simulator` or `openrouter`).
    """
    resume: bool
    """
    attachSession with replay is supported.
    """
    idempotency: bool
    auth: list[str]
    """
    Accepted credentials: `bearer` (Authorization header, `ailoop.bearer.<token>` subprotocol, or `token` query parameter); empty when authentication is off.
    """


class Limits(BaseModel):
    """
    Limits this server enforces. Exceeding one gets the documented error or close code.
    """

    model_config = ConfigDict(
        extra="forbid",
    )
    maxFrameBytes: Annotated[int, Field(ge=1)]
    """
    Largest text frame accepted; larger frames close the connection with 1009.
    """
    maxSessionsPerConnection: Annotated[int, Field(ge=1)]
    maxSessions: Annotated[int, Field(ge=1)]
    """
    Sessions per server process.
    """
    maxMessageChars: Annotated[int, Field(ge=1)]
    """
    Longest `content` of sendUserMessage.
    """
    maxHistoryMessages: Annotated[int, Field(ge=1)]
    """
    Conversation messages kept per session (system prompt excluded); older ones are dropped.
    """
    maxBatchSize: Annotated[int, Field(ge=1)]
    maxToolsPerSession: Annotated[int, Field(ge=0)]
    maxConnections: Annotated[int, Field(ge=1)]
    """
    Open WebSocket connections per server process; more are refused at the handshake with HTTP 503.
    """
    maxPendingToolCalls: Annotated[int, Field(ge=1)]
    """
    Tool calls one model step may ask for; more end the turn with LIMIT_REACHED.
    """
    requestsPerSecond: Annotated[float, Field(ge=0.0)]
    """
    Sustained request rate per connection (token bucket); over it requests get RATE_LIMITED and client notifications are dropped.
    """
    requestBurst: Annotated[int, Field(ge=1)]
    idleTimeoutMs: Annotated[int, Field(ge=0)]
    """
    A connection with no frame in either direction for this long is closed with 1000 (reason idle_timeout); 0 disables.
    """
    toolResultTimeoutMs: Annotated[int, Field(ge=0)]
    """
    How long a turn waits for tool results before ending with TOOL_RESULT_TIMEOUT; 0 waits for ever.
    """
    sessionMaxLifetimeMs: Annotated[int, Field(ge=0)]
    """
    A session older than this is ended (reason max_lifetime); 0 disables.
    """
    resumeGraceMs: Annotated[int, Field(ge=0)]
    """
    How long a session outlives its connection, detached, waiting for attachSession; 0 releases it at once.
    """
    replayLogSize: Annotated[int, Field(ge=1)]
    """
    Notifications kept per session for replay.
    """
    outboundHighWater: Annotated[int, Field(ge=1)]
    """
    Frames queued for one connection past which text chunks of the same message are merged.
    """
    outboundMaxBytes: Annotated[int, Field(ge=1)]
    """
    Bytes queued for one connection past which it is closed with 1008 (its sessions are detached).
    """
    heartbeatIntervalMs: Annotated[int, Field(ge=0)]
    """
    WebSocket ping interval; a peer that does not answer within the same time is disconnected. 0 disables.
    """


class ErrorObject(BaseModel):
    """
    JSON-RPC 2.0 error object (§5.1). `code` is one of `x-error-codes`. For application errors `data.retryable` says whether the same request may succeed later.
    """

    model_config = ConfigDict(
        extra="forbid",
    )
    code: int
    message: str
    data: Any | None = None
    """
    Extra information; for application codes an ErrorData object.
    """


class ErrorData(BaseModel):
    """
    Structured detail of an error.
    """

    model_config = ConfigDict(
        extra="allow",
    )
    retryable: bool
    """
    Whether repeating the same action later may succeed.
    """
    retryAfterMs: Annotated[int | None, Field(ge=0)] = None
    """
    When known, how long to wait before retrying.
    """
    kind: str | None = None
    """
    A machine-readable sub-kind, e.g. `rate_limit`, `unavailable`, `timeout`, `midstream`.
    """
    status: str | None = None
    """
    For INVALID_SESSION_STATE: the session's current status.
    """
    detail: str | None = None
    """
    Human-readable detail, never containing secrets.
    """


class JsonRpcRequest(BaseModel):
    """
    Any JSON-RPC 2.0 request (client → server).
    """

    model_config = ConfigDict(
        extra="forbid",
    )
    jsonrpc: Literal["2.0"]
    id: Annotated[str | int | float | None, Field(title="RequestId")]
    """
    A JSON-RPC request id: a string, a number or null (JSON-RPC 2.0 §4). Booleans, objects and arrays are not ids. Numbers should be integers; null is discouraged by JSON-RPC 2.0 but accepted and echoed.
    """
    method: str
    params: dict[str, Any] | list[Any] | None = None


class JsonRpcNotification(BaseModel):
    """
    Any JSON-RPC 2.0 notification (a request without `id`; no response is ever sent for it).
    """

    model_config = ConfigDict(
        extra="forbid",
    )
    jsonrpc: Literal["2.0"]
    method: str
    params: dict[str, Any] | list[Any] | None = None


class JsonRpcSuccessResponse(BaseModel):
    """
    A successful response (server → client).
    """

    model_config = ConfigDict(
        extra="forbid",
    )
    jsonrpc: Literal["2.0"]
    id: Annotated[str | int | float | None, Field(title="RequestId")]
    """
    A JSON-RPC request id: a string, a number or null (JSON-RPC 2.0 §4). Booleans, objects and arrays are not ids. Numbers should be integers; null is discouraged by JSON-RPC 2.0 but accepted and echoed.
    """
    result: Any


class JsonRpcErrorResponse(BaseModel):
    """
    An error response (server → client). `id` is null when the request's id could not be read (parse error, invalid request).
    """

    model_config = ConfigDict(
        extra="forbid",
    )
    jsonrpc: Literal["2.0"]
    id: Annotated[str | int | float | None, Field(title="RequestId")]
    """
    A JSON-RPC request id: a string, a number or null (JSON-RPC 2.0 §4). Booleans, objects and arrays are not ids. Numbers should be integers; null is discouraged by JSON-RPC 2.0 but accepted and echoed.
    """
    error: ErrorObject


class JsonRpcBatchResponse(
    RootModel[list[JsonRpcSuccessResponse | JsonRpcErrorResponse]]
):
    """
    The answer to a batch: an array of the responses to its requests (never empty; a batch of notifications only gets no answer).
    """

    root: Annotated[
        list[JsonRpcSuccessResponse | JsonRpcErrorResponse],
        Field(min_length=1, title="JsonRpcBatchResponse"),
    ]
    """
    The answer to a batch: an array of the responses to its requests (never empty; a batch of notifications only gets no answer).
    """


class InitializeParams(BaseModel):
    """
    Params of `initialize`.
    """

    model_config = ConfigDict(
        extra="forbid",
    )
    protocolVersion: Annotated[int | None, Field(ge=1)] = None
    clientInfo: ClientInfo | None = None


class InitializeResult(BaseModel):
    """
    Result of `initialize`.
    """

    model_config = ConfigDict(
        extra="forbid",
    )
    protocolVersion: Annotated[int, Field(ge=1)]
    serverInfo: ServerInfo
    capabilities: Capabilities
    limits: Limits


class InitializeRequest(BaseModel):
    """
    Optional handshake: the client says which protocol version it speaks and learns the server's version, capabilities and limits. May be sent at any time, any number of times; it changes nothing.
    """

    model_config = ConfigDict(
        extra="forbid",
    )
    jsonrpc: Literal["2.0"]
    id: Annotated[str | int | float | None, Field(title="RequestId")]
    """
    A JSON-RPC request id: a string, a number or null (JSON-RPC 2.0 §4). Booleans, objects and arrays are not ids. Numbers should be integers; null is discouraged by JSON-RPC 2.0 but accepted and echoed.
    """
    method: Literal["initialize"]
    params: InitializeParams | None = None


class StartSessionParams(BaseModel):
    """
    Params of `startSession`.
    """

    model_config = ConfigDict(
        extra="forbid",
    )
    systemPrompt: Annotated[str | None, Field(max_length=200000)] = None
    model: Annotated[str | None, Field(max_length=256, min_length=1)] = None
    """
    Model override for this session (the provider's model name).
    """
    tools: Annotated[list[Tool] | None, Field(max_length=128)] = None
    sampling: SamplingOptions | None = None
    metadata: JsonObject | None = None
    """
    Opaque client data, echoed nowhere, kept with the session.
    """


class StartSessionResult(BaseModel):
    """
    Result of `startSession`.
    """

    model_config = ConfigDict(
        extra="forbid",
    )
    sessionId: Annotated[str, Field(max_length=128, min_length=1, title="SessionId")]
    """
    Opaque id of a session, chosen by the server.
    """
    status: SessionStatus
    model: str
    tools: list[str]
    """
    Names of the declared tools.
    """
    resumeToken: Annotated[str, Field(min_length=16)]
    """
    Secret needed to attachSession to this session from another connection. Distinct from the session id; keep it private. The server stores only its hash.
    """


class StartSessionRequest(BaseModel):
    """
    Start a session owned by this connection. The response comes before any notification of the new session (ORD-2); the first notification is SessionStatusNotification `started` with seq 1.
    """

    model_config = ConfigDict(
        extra="forbid",
    )
    jsonrpc: Literal["2.0"]
    id: Annotated[str | int | float | None, Field(title="RequestId")]
    """
    A JSON-RPC request id: a string, a number or null (JSON-RPC 2.0 §4). Booleans, objects and arrays are not ids. Numbers should be integers; null is discouraged by JSON-RPC 2.0 but accepted and echoed.
    """
    method: Literal["startSession"]
    params: StartSessionParams | None = None


class SendUserMessageParams(BaseModel):
    """
    Params of `sendUserMessage`.
    """

    model_config = ConfigDict(
        extra="forbid",
    )
    sessionId: Annotated[str, Field(max_length=128, min_length=1, title="SessionId")]
    """
    Opaque id of a session, chosen by the server.
    """
    content: Annotated[str, Field(min_length=1)]
    idempotencyKey: Annotated[str | None, Field(max_length=128, min_length=1)] = None
    """
    Client-chosen key that makes a retry safe: a request repeated with the same key (e.g. after a reconnect) gets the first request's result and has no second effect. Keys are remembered per session (the last 256).
    """


class SendUserMessageResult(BaseModel):
    """
    Result of `sendUserMessage`.
    """

    model_config = ConfigDict(
        extra="forbid",
    )
    sessionId: Annotated[str, Field(max_length=128, min_length=1, title="SessionId")]
    """
    Opaque id of a session, chosen by the server.
    """
    turnId: Annotated[str, Field(max_length=128, min_length=1, title="TurnId")]
    """
    Opaque id of one turn (one user message and everything the model does in answer to it).
    """


class SendUserMessageRequest(BaseModel):
    """
    Send a user message: starts a turn. Answered at once with the turn id; the reply streams as notifications after the response (ORD-3). Refused with INVALID_SESSION_STATE while a turn runs or the session is paused.
    """

    model_config = ConfigDict(
        extra="forbid",
    )
    jsonrpc: Literal["2.0"]
    id: Annotated[str | int | float | None, Field(title="RequestId")]
    """
    A JSON-RPC request id: a string, a number or null (JSON-RPC 2.0 §4). Booleans, objects and arrays are not ids. Numbers should be integers; null is discouraged by JSON-RPC 2.0 but accepted and echoed.
    """
    method: Literal["sendUserMessage"]
    params: SendUserMessageParams


class ProvideToolResultParams(BaseModel):
    """
    Params of `provideToolResult`.
    """

    model_config = ConfigDict(
        extra="forbid",
    )
    sessionId: Annotated[str, Field(max_length=128, min_length=1, title="SessionId")]
    """
    Opaque id of a session, chosen by the server.
    """
    toolCallId: Annotated[str, Field(max_length=256, min_length=1, title="ToolCallId")]
    """
    Id of one tool call, as generated by the model provider.
    """
    result: Any
    """
    The tool's output: a string, or any JSON value (sent to the model as its JSON text).
    """
    isError: bool | None = None
    """
    The tool failed; `result` describes the failure. The model is told so.
    """
    idempotencyKey: Annotated[str | None, Field(max_length=128, min_length=1)] = None
    """
    Client-chosen key that makes a retry safe: a request repeated with the same key (e.g. after a reconnect) gets the first request's result and has no second effect. Keys are remembered per session (the last 256).
    """


class ProvideToolResultResult(BaseModel):
    """
    Result of `provideToolResult`.
    """

    model_config = ConfigDict(
        extra="forbid",
    )
    sessionId: Annotated[str, Field(max_length=128, min_length=1, title="SessionId")]
    """
    Opaque id of a session, chosen by the server.
    """
    toolCallId: Annotated[str, Field(max_length=256, min_length=1, title="ToolCallId")]
    """
    Id of one tool call, as generated by the model provider.
    """
    pendingToolCalls: Annotated[int, Field(ge=0)]
    """
    Tool calls of this step still waiting for a result; 0 means the turn now continues.
    """


class ProvideToolResultRequest(BaseModel):
    """
    Give the result of one tool call. When every tool call of the model step has a result, the turn goes on by itself (a new assistant message streams after this response).
    """

    model_config = ConfigDict(
        extra="forbid",
    )
    jsonrpc: Literal["2.0"]
    id: Annotated[str | int | float | None, Field(title="RequestId")]
    """
    A JSON-RPC request id: a string, a number or null (JSON-RPC 2.0 §4). Booleans, objects and arrays are not ids. Numbers should be integers; null is discouraged by JSON-RPC 2.0 but accepted and echoed.
    """
    method: Literal["provideToolResult"]
    params: ProvideToolResultParams


class StopSessionParams(BaseModel):
    """
    Params of `stopSession`.
    """

    model_config = ConfigDict(
        extra="forbid",
    )
    sessionId: Annotated[str, Field(max_length=128, min_length=1, title="SessionId")]
    """
    Opaque id of a session, chosen by the server.
    """


class StopSessionResult(BaseModel):
    """
    Result of `stopSession`.
    """

    model_config = ConfigDict(
        extra="forbid",
    )
    sessionId: Annotated[str, Field(max_length=128, min_length=1, title="SessionId")]
    """
    Opaque id of a session, chosen by the server.
    """
    status: Literal["ended"]


class StopSessionRequest(BaseModel):
    """
    End a session. A turn in flight is cancelled (its message ends with finishReason `cancelled`), then SessionStatusNotification `ended` is sent, then this response (ORD-5). Nothing of the session follows the response. Stopping an unknown or already-ended session gets SESSION_NOT_FOUND.
    """

    model_config = ConfigDict(
        extra="forbid",
    )
    jsonrpc: Literal["2.0"]
    id: Annotated[str | int | float | None, Field(title="RequestId")]
    """
    A JSON-RPC request id: a string, a number or null (JSON-RPC 2.0 §4). Booleans, objects and arrays are not ids. Numbers should be integers; null is discouraged by JSON-RPC 2.0 but accepted and echoed.
    """
    method: Literal["stopSession"]
    params: StopSessionParams


class PauseSessionParams(BaseModel):
    """
    Params of `pauseSession`.
    """

    model_config = ConfigDict(
        extra="forbid",
    )
    sessionId: Annotated[str, Field(max_length=128, min_length=1, title="SessionId")]
    """
    Opaque id of a session, chosen by the server.
    """


class PauseSessionResult(BaseModel):
    """
    Result of `pauseSession`.
    """

    model_config = ConfigDict(
        extra="forbid",
    )
    sessionId: Annotated[str, Field(max_length=128, min_length=1, title="SessionId")]
    """
    Opaque id of a session, chosen by the server.
    """
    status: SessionStatus


class PauseSessionRequest(BaseModel):
    """
    Pause a session: from now on its output is held. A turn in flight stops where it is (no notification of it is sent; the provider stream is not read further) and delivers its held output, in order, on resume. While paused, sendUserMessage is refused (INVALID_SESSION_STATE); provideToolResult, cancelTurn and stopSession work. SessionStatusNotification `paused` precedes the response. Pausing a paused session is harmless (same result, no notification).
    """

    model_config = ConfigDict(
        extra="forbid",
    )
    jsonrpc: Literal["2.0"]
    id: Annotated[str | int | float | None, Field(title="RequestId")]
    """
    A JSON-RPC request id: a string, a number or null (JSON-RPC 2.0 §4). Booleans, objects and arrays are not ids. Numbers should be integers; null is discouraged by JSON-RPC 2.0 but accepted and echoed.
    """
    method: Literal["pauseSession"]
    params: PauseSessionParams


class ResumeSessionParams(BaseModel):
    """
    Params of `resumeSession`.
    """

    model_config = ConfigDict(
        extra="forbid",
    )
    sessionId: Annotated[str, Field(max_length=128, min_length=1, title="SessionId")]
    """
    Opaque id of a session, chosen by the server.
    """


class ResumeSessionResult(BaseModel):
    """
    Result of `resumeSession`.
    """

    model_config = ConfigDict(
        extra="forbid",
    )
    sessionId: Annotated[str, Field(max_length=128, min_length=1, title="SessionId")]
    """
    Opaque id of a session, chosen by the server.
    """
    status: SessionStatus


class ResumeSessionRequest(BaseModel):
    """
    Resume a paused session. SessionStatusNotification with the status the session is now in (idle, streaming or awaiting_tool_results) precedes the response; held output follows it. Resuming a session that is not paused is harmless (its current status, no notification).
    """

    model_config = ConfigDict(
        extra="forbid",
    )
    jsonrpc: Literal["2.0"]
    id: Annotated[str | int | float | None, Field(title="RequestId")]
    """
    A JSON-RPC request id: a string, a number or null (JSON-RPC 2.0 §4). Booleans, objects and arrays are not ids. Numbers should be integers; null is discouraged by JSON-RPC 2.0 but accepted and echoed.
    """
    method: Literal["resumeSession"]
    params: ResumeSessionParams


class CancelTurnParams(BaseModel):
    """
    Params of `cancelTurn`.
    """

    model_config = ConfigDict(
        extra="forbid",
    )
    sessionId: Annotated[str, Field(max_length=128, min_length=1, title="SessionId")]
    """
    Opaque id of a session, chosen by the server.
    """


class CancelTurnResult(BaseModel):
    """
    Result of `cancelTurn`.
    """

    model_config = ConfigDict(
        extra="forbid",
    )
    sessionId: Annotated[str, Field(max_length=128, min_length=1, title="SessionId")]
    """
    Opaque id of a session, chosen by the server.
    """
    cancelled: bool
    turnId: TurnId | None
    """
    The cancelled turn, or null.
    """


class CancelTurnRequest(BaseModel):
    """
    Cancel the turn in flight. Never an error: the turn ends with a final AIMessageChunkNotification whose finishReason is `cancelled`, then SessionStatusNotification `idle` (or `paused` stays, if paused), both before this response (ORD-7). With no turn in flight the answer is `cancelled: false` and nothing is sent.
    """

    model_config = ConfigDict(
        extra="forbid",
    )
    jsonrpc: Literal["2.0"]
    id: Annotated[str | int | float | None, Field(title="RequestId")]
    """
    A JSON-RPC request id: a string, a number or null (JSON-RPC 2.0 §4). Booleans, objects and arrays are not ids. Numbers should be integers; null is discouraged by JSON-RPC 2.0 but accepted and echoed.
    """
    method: Literal["cancelTurn"]
    params: CancelTurnParams


class SessionStatusParams(BaseModel):
    """
    Params of `SessionStatusNotification`.
    """

    model_config = ConfigDict(
        extra="forbid",
    )
    sessionId: Annotated[str, Field(max_length=128, min_length=1, title="SessionId")]
    """
    Opaque id of a session, chosen by the server.
    """
    seq: Annotated[int, Field(ge=1, title="Seq")]
    """
    Per-session notification sequence number: 1 for the first notification of a session, then rising by exactly 1 with each notification of that session (requirement SEQ-1).
    """
    status: SessionStatus
    reason: str | None = None
    """
    Why, where relevant: for `ended` one of `client_stop`, `disconnect` (the connection went away and no attachSession came within the grace period), `server_shutdown`, `max_lifetime`.
    """
    turnId: TurnId | None = None
    """
    The turn in flight, if any.
    """


class SessionStatusNotification(BaseModel):
    """
    The session changed status. The first notification of every session is `started` (seq 1); the last is `ended`.
    """

    model_config = ConfigDict(
        extra="forbid",
    )
    jsonrpc: Literal["2.0"]
    method: Literal["SessionStatusNotification"]
    params: SessionStatusParams


class AIMessageChunkParams(BaseModel):
    """
    Params of `AIMessageChunkNotification`.
    """

    model_config = ConfigDict(
        extra="forbid",
    )
    sessionId: Annotated[str, Field(max_length=128, min_length=1, title="SessionId")]
    """
    Opaque id of a session, chosen by the server.
    """
    seq: Annotated[int, Field(ge=1, title="Seq")]
    """
    Per-session notification sequence number: 1 for the first notification of a session, then rising by exactly 1 with each notification of that session (requirement SEQ-1).
    """
    turnId: Annotated[str, Field(max_length=128, min_length=1, title="TurnId")]
    """
    Opaque id of one turn (one user message and everything the model does in answer to it).
    """
    messageId: Annotated[str, Field(max_length=128, min_length=1, title="MessageId")]
    """
    Opaque id of one assistant message (one model step) inside a turn.
    """
    chunk: str
    """
    Text to append to the message (may be empty, always empty on the final chunk).
    """
    isFinal: bool
    finishReason: FinishReason | None = None
    usage: Usage | None = None


class AIMessageChunkNotification(BaseModel):
    """
    A piece of an assistant message. Chunks of a message arrive in order; exactly one chunk with isFinal true ends each message and carries finishReason (and usage when known); nothing of that message follows it.
    """

    model_config = ConfigDict(
        extra="forbid",
    )
    jsonrpc: Literal["2.0"]
    method: Literal["AIMessageChunkNotification"]
    params: AIMessageChunkParams


class ToolCallParams(BaseModel):
    """
    Params of `ToolCallNotification`.
    """

    model_config = ConfigDict(
        extra="forbid",
    )
    sessionId: Annotated[str, Field(max_length=128, min_length=1, title="SessionId")]
    """
    Opaque id of a session, chosen by the server.
    """
    seq: Annotated[int, Field(ge=1, title="Seq")]
    """
    Per-session notification sequence number: 1 for the first notification of a session, then rising by exactly 1 with each notification of that session (requirement SEQ-1).
    """
    turnId: Annotated[str, Field(max_length=128, min_length=1, title="TurnId")]
    """
    Opaque id of one turn (one user message and everything the model does in answer to it).
    """
    messageId: Annotated[str, Field(max_length=128, min_length=1, title="MessageId")]
    """
    Opaque id of one assistant message (one model step) inside a turn.
    """
    toolCallId: Annotated[str, Field(max_length=256, min_length=1, title="ToolCallId")]
    """
    Id of one tool call, as generated by the model provider.
    """
    name: str
    arguments: JsonObject
    """
    The parsed JSON arguments.
    """


class ToolCallNotification(BaseModel):
    """
    The model asks the client to run a tool. All tool calls of a model step arrive before that step's final chunk (finishReason `tool_calls`). Answer each with provideToolResult.
    """

    model_config = ConfigDict(
        extra="forbid",
    )
    jsonrpc: Literal["2.0"]
    method: Literal["ToolCallNotification"]
    params: ToolCallParams


class ErrorParams(BaseModel):
    """
    Params of `ErrorNotification`.
    """

    model_config = ConfigDict(
        extra="forbid",
    )
    sessionId: Annotated[str, Field(max_length=128, min_length=1, title="SessionId")]
    """
    Opaque id of a session, chosen by the server.
    """
    seq: Annotated[int, Field(ge=1, title="Seq")]
    """
    Per-session notification sequence number: 1 for the first notification of a session, then rising by exactly 1 with each notification of that session (requirement SEQ-1).
    """
    turnId: TurnId | None = None
    code: int
    message: str
    data: ErrorData


class ErrorNotification(BaseModel):
    """
    A failure not tied to a request (the AI provider failed mid-turn, a timeout). When it ends a turn it is followed by that turn's final chunk with finishReason `error`.
    """

    model_config = ConfigDict(
        extra="forbid",
    )
    jsonrpc: Literal["2.0"]
    method: Literal["ErrorNotification"]
    params: ErrorParams


class AttachSessionParams(BaseModel):
    """
    Params of `attachSession`.
    """

    model_config = ConfigDict(
        extra="forbid",
    )
    sessionId: Annotated[str, Field(max_length=128, min_length=1, title="SessionId")]
    """
    Opaque id of a session, chosen by the server.
    """
    resumeToken: Annotated[str, Field(max_length=256, min_length=1)]
    afterSeq: Annotated[int, Field(ge=0)]
    """
    The seq of the last notification the client has; 0 replays everything still in the log.
    """


class AttachSessionResult(BaseModel):
    """
    Result of `attachSession`.
    """

    model_config = ConfigDict(
        extra="forbid",
    )
    sessionId: Annotated[str, Field(max_length=128, min_length=1, title="SessionId")]
    """
    Opaque id of a session, chosen by the server.
    """
    status: SessionStatus
    lastSeq: Annotated[int, Field(ge=0)]
    """
    Seq of the session's last notification at the time of attaching.
    """
    replayed: Annotated[int, Field(ge=0)]
    """
    How many notifications are replayed after this response.
    """
    turnId: TurnId | None


class AttachSessionRequest(BaseModel):
    """
    Attach a session to this connection after a reconnect, with the resumeToken from startSession. The response comes first; then every notification of the session with seq > afterSeq is replayed in order, then the session continues live on this connection (REPLAY-1). A session still attached to another connection is taken over (that connection receives nothing more of it). A wrong token or an unknown session gets SESSION_NOT_FOUND; a cursor older than the replay log gets REPLAY_WINDOW_EXPIRED with the oldest seq still available and a snapshot of the session; a cursor beyond the last seq gets INVALID_PARAMS.
    """

    model_config = ConfigDict(
        extra="forbid",
    )
    jsonrpc: Literal["2.0"]
    id: Annotated[str | int | float | None, Field(title="RequestId")]
    """
    A JSON-RPC request id: a string, a number or null (JSON-RPC 2.0 §4). Booleans, objects and arrays are not ids. Numbers should be integers; null is discouraged by JSON-RPC 2.0 but accepted and echoed.
    """
    method: Literal["attachSession"]
    params: AttachSessionParams


class PingParams(BaseModel):
    """
    Params of `ping`.
    """

    model_config = ConfigDict(
        extra="forbid",
    )
    data: Any | None = None
    """
    Anything; echoed back.
    """


class PingResult(BaseModel):
    """
    Result of `ping`.
    """

    model_config = ConfigDict(
        extra="forbid",
    )
    pong: Literal[True]
    serverTimeMs: int
    """
    Server wall clock, milliseconds since the Unix epoch.
    """
    data: Any | None = None
    """
    The data sent, if any.
    """


class PingRequest(BaseModel):
    """
    Application-level heartbeat: answered at once with pong. Any request also counts as activity for the idle timeout.
    """

    model_config = ConfigDict(
        extra="forbid",
    )
    jsonrpc: Literal["2.0"]
    id: Annotated[str | int | float | None, Field(title="RequestId")]
    """
    A JSON-RPC request id: a string, a number or null (JSON-RPC 2.0 §4). Booleans, objects and arrays are not ids. Numbers should be integers; null is discouraged by JSON-RPC 2.0 but accepted and echoed.
    """
    method: Literal["ping"]
    params: PingParams | None = None


class PendingToolCall(BaseModel):
    """
    A tool call awaiting a result.
    """

    model_config = ConfigDict(
        extra="forbid",
    )
    toolCallId: Annotated[str, Field(max_length=256, min_length=1, title="ToolCallId")]
    """
    Id of one tool call, as generated by the model provider.
    """
    name: str
    arguments: JsonObject


class SessionSnapshot(BaseModel):
    """
    The state of a session, given when its replay window has passed: enough to rebuild a UI and attach again with afterSeq = lastSeq.
    """

    model_config = ConfigDict(
        extra="forbid",
    )
    sessionId: Annotated[str, Field(max_length=128, min_length=1, title="SessionId")]
    """
    Opaque id of a session, chosen by the server.
    """
    status: SessionStatus
    turnId: TurnId | None
    lastSeq: Annotated[int, Field(ge=0)]
    oldestSeq: Annotated[int, Field(ge=0)]
    """
    Oldest seq still in the replay log (0 when the log is empty).
    """
    pendingToolCalls: list[PendingToolCall]
    messages: list[JsonObject]
    """
    The conversation so far in OpenAI chat format (system prompt excluded).
    """
