// AILoop Interactive playground: a JSON-RPC 2.0 client over one WebSocket, no build step,
// no external requests. The protocol is in docs/protocol.md; usage in docs/client.md.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const MAX_LOG_ROWS = 2000;
  const LIVE = new Set(["started", "idle", "streaming", "awaiting_tool_results", "paused"]);
  const ERROR_NAMES = {
    "-32700": "PARSE_ERROR", "-32600": "INVALID_REQUEST", "-32601": "METHOD_NOT_FOUND",
    "-32602": "INVALID_PARAMS", "-32603": "INTERNAL_ERROR", "-32001": "SESSION_NOT_FOUND",
    "-32002": "INVALID_SESSION_STATE", "-32003": "UNKNOWN_TOOL_CALL", "-32004": "LIMIT_REACHED",
    "-32005": "PROVIDER_ERROR", "-32006": "PROVIDER_RATE_LIMITED", "-32007": "PROVIDER_UNAVAILABLE",
    "-32008": "PROVIDER_TIMEOUT", "-32009": "UNSUPPORTED_PROTOCOL_VERSION",
    "-32010": "REPLAY_WINDOW_EXPIRED", "-32011": "RATE_LIMITED", "-32012": "IDEMPOTENCY_CONFLICT",
    "-32013": "TOOL_RESULT_TIMEOUT",
  };
  const CLOSE_CODES = {
    1000: "normal close", 1001: "server shutting down", 1006: "connection lost (no close frame)",
    1007: "invalid UTF-8", 1008: "slow consumer", 1009: "frame too large", 1011: "server error or ping timeout",
  };

  const state = {
    ws: null,
    nextId: 1,
    pending: new Map(),       // id -> {method, resolve}
    session: null,            // {id, status, turnId, lastSeq}
    lastSeq: new Map(),       // sessionId -> last seq seen
    bubbles: new Map(),       // messageId -> {el, text}
    toolForms: new Map(),     // toolCallId -> form
  };

  // ------------------------------------------------------------------ helpers

  function errorText(err) {
    if (!err || typeof err !== "object") return String(err);
    const name = ERROR_NAMES[String(err.code)] || "";
    const data = err.data !== undefined ? " " + JSON.stringify(err.data) : "";
    return `${err.code}${name ? " " + name : ""}: ${err.message || ""}${data}`;
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // Append to a scrolling box, following the bottom only if the reader was already there.
  function atBottom(box) {
    return box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  }

  function scrollDown(box) {
    box.scrollTop = box.scrollHeight;
  }

  function addToChat(node) {
    const box = $("messages");
    const follow = atBottom(box);
    box.appendChild(node);
    if (follow) scrollDown(box);
    return node;
  }

  function note(text, isError) {
    return addToChat(el("div", "note" + (isError ? " error" : ""), text));
  }

  function defaultUrl() {
    if (location.protocol === "http:" || location.protocol === "https:") {
      return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
    }
    return "ws://127.0.0.1:8765/ws";
  }

  // ------------------------------------------------------------------ frame log

  function logFrame(dir, text, msg) {
    const row = el("div", "frame " + (dir === ">" ? "out" : "in"));
    const time = new Date();
    row.appendChild(el("span", "time", time.toTimeString().slice(0, 8) + "." + String(time.getMilliseconds()).padStart(3, "0")));
    row.appendChild(el("span", "dir", dir === ">" ? "→" : "←"));
    let seq = "";
    let method = "";
    if (msg && typeof msg === "object" && !Array.isArray(msg)) {
      if (msg.params && typeof msg.params.seq === "number") seq = String(msg.params.seq);
      else if (msg.id !== undefined) seq = "#" + msg.id;
      method = msg.method || (msg.error ? "error" : "result");
      if (msg.error) row.classList.add("error");
    }
    row.appendChild(el("span", "seq", seq));
    const body = row.appendChild(el("span", "json"));
    if (method) body.appendChild(el("b", "kind", method + (msg.params && msg.params.status ? " " + msg.params.status : "")));
    body.appendChild(document.createTextNode(text));
    row.dataset.dir = dir === ">" ? "out" : "in";
    row.dataset.method = method;
    row.dataset.seq = seq;
    row.dataset.text = text.toLowerCase();
    const log = $("log");
    const follow = atBottom(log);
    log.appendChild(row);
    while (log.childElementCount > MAX_LOG_ROWS) log.firstElementChild.remove();
    applyFilter(row);
    updateLogCount();
    if (follow) scrollDown(log);
    return row;
  }

  function applyFilter(row) {
    const q = $("log-filter").value.trim().toLowerCase();
    const showOut = $("log-out").checked, showIn = $("log-in").checked, showChunks = $("log-chunks").checked;
    const hidden = (row.dataset.dir === "out" && !showOut) || (row.dataset.dir === "in" && !showIn)
      || (!showChunks && row.dataset.method === "AIMessageChunkNotification")
      || (q && !row.dataset.text.includes(q));
    row.classList.toggle("hidden", hidden);
  }

  function refilter() {
    for (const row of $("log").children) applyFilter(row);
    updateLogCount();
  }

  function updateLogCount() {
    const rows = $("log").children;
    let shown = 0;
    for (const r of rows) if (!r.classList.contains("hidden")) shown++;
    $("log-count").textContent = shown === rows.length ? String(rows.length) : `${shown} of ${rows.length}`;
  }

  // ------------------------------------------------------------------ connection

  function setConn(s, text) {
    const pill = $("conn-state");
    pill.dataset.state = s;
    pill.textContent = text || s;
    pill.className = "pill " + (s === "connected" ? "on" : s === "connecting" ? "busy" : "off");
  }

  function connect() {
    if (state.ws) return;
    const url = $("url").value.trim();
    const token = $("token").value.trim();
    let ws;
    try {
      // Browsers cannot set an Authorization header on a WebSocket: the token travels as
      // a subprotocol next to "ailoop.v1" (the server selects "ailoop.v1").
      ws = token ? new WebSocket(url, ["ailoop.v1", "ailoop.bearer." + token]) : new WebSocket(url);
    } catch (e) {
      note("Cannot connect: " + e.message, true);
      return;
    }
    state.ws = ws;
    setConn("connecting");
    updateControls();
    ws.onopen = async () => {
      setConn("connected");
      note(`Connected to ${url.replace(/token=[^&]*/, "token=…")}`);
      updateControls();
      const resp = await rpc("initialize", { protocolVersion: 1, clientInfo: { name: "ailoop-playground", version: "1" } });
      if (resp && resp.result) {
        const r = resp.result;
        $("server-info").textContent = `${r.serverInfo.name} ${r.serverInfo.version} · backend ${(r.capabilities.backends || []).join(", ")}`;
      }
    };
    ws.onmessage = (ev) => receive(ev.data);
    ws.onerror = () => { /* onclose follows with the code */ };
    ws.onclose = (ev) => {
      const why = CLOSE_CODES[ev.code] ? ` (${CLOSE_CODES[ev.code]})` : "";
      const wasOpen = $("conn-state").dataset.state === "connected";
      note(wasOpen ? `Connection closed: ${ev.code}${why}${ev.reason ? " " + ev.reason : ""}`
                   : `Could not connect (${ev.code}${why}). Check the URL, the token and the server log.`, ev.code !== 1000);
      state.ws = null;
      for (const { resolve } of state.pending.values()) resolve(null);
      state.pending.clear();
      if (state.session && state.session.status !== "ended") setStatus("ended");
      $("server-info").textContent = "";
      setConn("disconnected");
      updateControls();
    };
  }

  function disconnect() {
    if (state.ws) state.ws.close(1000, "");
  }

  function send(obj) {
    const text = JSON.stringify(obj);
    logFrame(">", text, obj);
    state.ws.send(text);
  }

  // Send a request; resolves with the whole response object (or null if the connection closed).
  function rpc(method, params) {
    if (!state.ws || state.ws.readyState !== WebSocket.OPEN) {
      note(`Not connected: ${method} not sent`, true);
      return Promise.resolve(null);
    }
    const id = state.nextId++;
    const msg = { jsonrpc: "2.0", id, method };
    if (params !== undefined) msg.params = params;
    return new Promise((resolve) => {
      state.pending.set(id, { method, resolve });
      send(msg);
    });
  }

  function receive(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch (e) {
      logFrame("<", text, null).classList.add("bad");
      note("The server sent a frame that is not JSON", true);
      return;
    }
    const row = logFrame("<", text, msg);
    const items = Array.isArray(msg) ? msg : [msg];
    for (const m of items) {
      if (m && m.method) notification(m, row);
      else if (m && (m.result !== undefined || m.error !== undefined)) response(m);
    }
  }

  function response(m) {
    const p = state.pending.get(m.id);
    if (!p) {
      if (m.error) note(`Error: ${errorText(m.error)}`, true);
      return;
    }
    state.pending.delete(m.id);
    if (m.error) note(`${p.method} failed: ${errorText(m.error)}`, true);
    p.resolve(m);
  }

  // ------------------------------------------------------------------ session

  function setStatus(status, turnId) {
    const s = state.session;
    if (!s) return;
    s.status = status;
    if (turnId !== undefined) s.turnId = turnId;
    if (status === "idle" || status === "ended") s.turnId = null;
    const badge = $("status");
    badge.textContent = status;
    badge.dataset.status = status;
    $("turn-id").textContent = s.turnId || "—";
    if (status === "ended" || status === "idle") closeToolForms(status === "ended" ? "session ended" : "turn ended");
    updateControls();
  }

  function updateControls() {
    const open = !!state.ws && state.ws.readyState === WebSocket.OPEN;
    const s = state.session;
    const live = open && !!s && LIVE.has(s.status);
    $("connect").disabled = !!state.ws;
    $("disconnect").disabled = !state.ws;
    $("url").disabled = !!state.ws;
    $("token").disabled = !!state.ws;
    $("start").disabled = !open || live;
    $("pause").disabled = !live || s.status === "paused";
    $("resume").disabled = !live || s.status !== "paused";
    $("cancel").disabled = !live || !(s.turnId || s.status === "streaming" || s.status === "awaiting_tool_results");
    $("stop").disabled = !live;
    $("input").disabled = !live;
    $("send").disabled = !live || !(s.status === "idle" || s.status === "started");
  }

  async function startSession() {
    const params = {};
    const system = $("system").value;
    if (system.trim()) params.systemPrompt = system;
    const toolsText = $("tools").value.trim();
    if (toolsText) {
      try {
        params.tools = JSON.parse(toolsText);
      } catch (e) {
        note("Tools are not valid JSON: " + e.message, true);
        return;
      }
    }
    $("start").disabled = true;
    const resp = await rpc("startSession", params);
    if (!resp || !resp.result) { updateControls(); return; }
    const r = resp.result;
    state.session = { id: r.sessionId, status: r.status, turnId: null };
    state.bubbles.clear();
    $("session-id").textContent = r.sessionId;
    note(`Session ${r.sessionId} started · model ${r.model} · tools: ${(r.tools || []).join(", ") || "none"}`);
    setStatus(r.status);
    $("input").focus();
  }

  async function sendMessage() {
    const s = state.session;
    const content = $("input").value;
    if (!s || !content.trim() || $("send").disabled) return;
    addToChat(el("div", "msg user", content));
    $("input").value = "";
    $("send").disabled = true;
    const resp = await rpc("sendUserMessage", { sessionId: s.id, content });
    if (resp && resp.result && s.status !== "ended") {
      s.turnId = resp.result.turnId;
      $("turn-id").textContent = s.turnId;
    }
    updateControls();
  }

  async function control(method) {
    const s = state.session;
    if (!s) return;
    const resp = await rpc(method, { sessionId: s.id });
    if (resp && resp.result && method === "cancelTurn" && !resp.result.cancelled) note("Nothing to cancel");
    updateControls();
  }

  // ------------------------------------------------------------------ notifications

  function notification(m, row) {
    const p = m.params || {};
    if (typeof p.seq === "number" && p.sessionId) {
      const last = state.lastSeq.get(p.sessionId) || 0;
      if (p.seq !== last + 1) {
        row.classList.add("bad");
        note(`seq gap in ${p.sessionId}: ${p.seq} after ${last}`, true);
      }
      state.lastSeq.set(p.sessionId, p.seq);
    }
    const s = state.session;
    if (!s || p.sessionId !== s.id) return;
    switch (m.method) {
      case "SessionStatusNotification":
        setStatus(p.status, p.turnId === undefined ? undefined : p.turnId);
        if (p.status === "ended") note(`Session ended${p.reason ? ": " + p.reason : ""}`);
        break;
      case "AIMessageChunkNotification":
        chunk(p);
        break;
      case "ToolCallNotification":
        toolCall(p);
        break;
      case "ErrorNotification":
        addToChat(el("div", "msg error", `Error ${errorText(p)}`));
        break;
      default:
        break; // a newer server's notification: logged, not interpreted
    }
  }

  function chunk(p) {
    let b = state.bubbles.get(p.messageId);
    if (!b && (p.chunk || !p.isFinal)) {
      const node = addToChat(el("div", "msg assistant streaming"));
      node.dataset.messageId = p.messageId;
      const span = node.appendChild(el("span", "text"));
      const text = span.appendChild(document.createTextNode(""));
      b = { el: node, text };
      state.bubbles.set(p.messageId, b);
    }
    if (b && p.chunk) {
      const follow = atBottom($("messages"));
      b.text.appendData(p.chunk);
      if (follow) scrollDown($("messages"));
    }
    if (p.isFinal) {
      if (b) {
        b.el.classList.remove("streaming");
        b.el.dataset.final = p.finishReason || "";
        const bits = [];
        if (p.finishReason && p.finishReason !== "stop") bits.push(p.finishReason);
        if (p.usage) bits.push(`${p.usage.totalTokens} tokens`);
        if (bits.length && p.finishReason !== "tool_calls") b.el.appendChild(el("span", "meta", bits.join(" · ")));
      } else if (p.finishReason === "cancelled") {
        note("Turn cancelled");
      } else if (p.finishReason === "error") {
        note("Turn ended by an error", true);
      }
      if (p.finishReason && p.finishReason !== "tool_calls") closeToolForms("turn ended");
    }
  }

  function toolCall(p) {
    const form = document.getElementById("tool-call-template").content.firstElementChild.cloneNode(true);
    form.dataset.toolCallId = p.toolCallId;
    form.dataset.name = p.name;
    form.querySelector(".tool-name").textContent = p.name;
    form.querySelector(".tool-args").textContent = JSON.stringify(p.arguments);
    form.querySelector(".tool-id").textContent = p.toolCallId;
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const s = state.session;
      const raw = form.querySelector(".tool-result").value;
      let result;
      try { result = JSON.parse(raw); } catch (e) { result = raw; }
      const params = { sessionId: s.id, toolCallId: p.toolCallId, result };
      if (form.querySelector(".tool-is-error").checked) params.isError = true;
      form.querySelector(".tool-submit").disabled = true;
      const resp = await rpc("provideToolResult", params);
      if (resp && resp.result) {
        finishToolForm(form, `sent · ${resp.result.pendingToolCalls} still pending`);
      } else {
        form.querySelector(".tool-submit").disabled = false;
        form.querySelector(".tool-state").textContent = resp && resp.error ? errorText(resp.error) : "not sent";
      }
    });
    state.toolForms.set(p.toolCallId, form);
    addToChat(form);
    form.querySelector(".tool-result").focus();
  }

  function finishToolForm(form, text) {
    form.classList.add("answered");
    for (const e of form.querySelectorAll("textarea, input, button")) e.disabled = true;
    form.querySelector(".tool-state").textContent = text;
    state.toolForms.delete(form.dataset.toolCallId);
  }

  function closeToolForms(why) {
    for (const form of [...state.toolForms.values()]) finishToolForm(form, why);
  }

  // ------------------------------------------------------------------ wiring

  function init() {
    $("url").value = defaultUrl();
    $("connect-form").addEventListener("submit", (ev) => { ev.preventDefault(); connect(); });
    $("disconnect").addEventListener("click", disconnect);
    $("start").addEventListener("click", startSession);
    $("send-form").addEventListener("submit", (ev) => { ev.preventDefault(); sendMessage(); });
    $("input").addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) { ev.preventDefault(); sendMessage(); }
    });
    $("pause").addEventListener("click", () => control("pauseSession"));
    $("resume").addEventListener("click", () => control("resumeSession"));
    $("cancel").addEventListener("click", () => control("cancelTurn"));
    $("stop").addEventListener("click", () => control("stopSession"));
    for (const id of ["log-filter", "log-out", "log-in", "log-chunks"]) $(id).addEventListener("input", refilter);
    $("log-clear").addEventListener("click", () => { $("log").replaceChildren(); updateLogCount(); });
    updateControls();
  }

  init();
})();
