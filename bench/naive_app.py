"""The classic naive FastAPI broadcast manager, as a baseline: `uvicorn bench.naive_app:app`.

A plain list of connected WebSockets; a broadcast awaits `send_text` on every one of them with
`asyncio.gather`. Subscribers connect to `/ws`; the load client asks for broadcasts on the control socket
`/control` with `{"publish": K, "seq0": S, "size": B, "t": ms?}` and gets `{"done": K}` once the K broadcasts
were awaited.
"""

from __future__ import annotations

import asyncio
import json

from fastapi import FastAPI, WebSocket, WebSocketDisconnect

from bench.messages import bench_message, now_ms, parse_control


class ConnectionManager:
    """The manager from countless tutorials: a list, and gather over it."""

    def __init__(self) -> None:
        self.active_connections: list[WebSocket] = []

    async def connect(self, websocket: WebSocket) -> None:
        await websocket.accept()
        self.active_connections.append(websocket)

    def disconnect(self, websocket: WebSocket) -> None:
        if websocket in self.active_connections:
            self.active_connections.remove(websocket)

    async def broadcast(self, message: str) -> None:
        await asyncio.gather(
            *(ws.send_text(message) for ws in self.active_connections), return_exceptions=True
        )


manager = ConnectionManager()
app = FastAPI(title="naive broadcast baseline")


@app.websocket("/ws")
async def subscriber(websocket: WebSocket) -> None:
    await manager.connect(websocket)
    try:
        while True:
            await websocket.receive_text()
    except WebSocketDisconnect:
        manager.disconnect(websocket)


@app.websocket("/control")
async def control(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            count, seq0, size, t = parse_control(await websocket.receive_text())
            for seq in range(seq0, seq0 + count):
                await manager.broadcast(bench_message(seq, t if t is not None else now_ms(), size))
            await websocket.send_text(json.dumps({"done": count}))
    except WebSocketDisconnect:
        pass
