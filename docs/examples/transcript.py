"""Print the frames of one turn with a tool call (the README's transcript).

    python docs/examples/transcript.py ws://127.0.0.1:8765/ws
"""

import asyncio
import json
import sys

import websockets


async def main(url: str) -> None:
    async with websockets.connect(url) as ws:

        async def send(msg: dict) -> None:
            print("→", json.dumps(msg, separators=(",", ":")))
            await ws.send(json.dumps(msg))

        async def until(pred) -> dict:
            while True:
                frame = json.loads(await ws.recv())
                print("←", json.dumps(frame, separators=(",", ":")))
                if pred(frame):
                    return frame

        tool = {"type": "function", "function": {"name": "get_weather", "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}}}}}
        await send({"jsonrpc": "2.0", "id": 1, "method": "startSession",
                    "params": {"systemPrompt": "You are a weather bot.", "tools": [tool]}})
        started = await until(lambda f: f.get("params", {}).get("status") == "started")
        sid = started["params"]["sessionId"]
        await send({"jsonrpc": "2.0", "id": 2, "method": "sendUserMessage",
                    "params": {"sessionId": sid, "content": '/sim tool get_weather {"city": "Paris"}'}})
        call = await until(lambda f: f.get("method") == "ToolCallNotification")
        await until(lambda f: f.get("params", {}).get("status") == "awaiting_tool_results")
        await send({"jsonrpc": "2.0", "id": 3, "method": "provideToolResult",
                    "params": {"sessionId": sid, "toolCallId": call["params"]["toolCallId"], "result": {"tempC": 21}}})
        await until(lambda f: f.get("params", {}).get("status") == "idle")
        await send({"jsonrpc": "2.0", "id": 4, "method": "stopSession", "params": {"sessionId": sid}})
        await until(lambda f: f.get("id") == 4)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "ws://127.0.0.1:8765/ws"))
