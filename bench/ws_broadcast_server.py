"""A baseline on the `websockets` library's own fan-out: `python -m bench.ws_broadcast_server --port P`.

Asyncio server API (`websockets.asyncio.server.serve`, compression off) on uvloop when it is installed
(as uvicorn does by default, so the baselines run on the same loop). Subscribers connect to `/`; the load
client asks for broadcasts on `/control` with `{"publish": K, "seq0": S, "size": B, "t": ms?}` and gets
`{"done": K}` once the K messages were handed to `broadcast()` (synchronous writes, no backpressure).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from collections.abc import Callable

from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

from bench.messages import bench_message, now_ms, parse_control

SUBSCRIBERS: set[ServerConnection] = set()


async def control(websocket: ServerConnection) -> None:
    try:
        async for text in websocket:
            count, seq0, size, t = parse_control(str(text))
            for seq in range(seq0, seq0 + count):
                broadcast(SUBSCRIBERS, bench_message(seq, t if t is not None else now_ms(), size))
                # Let the loop breathe between messages, as a server fed by a real publisher would.
                await asyncio.sleep(0)
            await websocket.send(json.dumps({"done": count}))
    except ConnectionClosed:
        pass


async def handler(websocket: ServerConnection) -> None:
    if websocket.request is not None and websocket.request.path == "/control":
        await control(websocket)
        return
    SUBSCRIBERS.add(websocket)
    try:
        await websocket.wait_closed()
    finally:
        SUBSCRIBERS.discard(websocket)


async def main(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set_result, None)
    async with serve(handler, host, port, compression=None, backlog=4096):
        await stop


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--asyncio", action="store_true", help="use asyncio's own loop even if uvloop is there"
    )
    args = parser.parse_args()
    with asyncio.Runner(loop_factory=None if args.asyncio else loop_factory()) as runner:
        runner.run(main(args.host, args.port))
