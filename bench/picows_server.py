"""A baseline on picows (a Cython WebSocket library for asyncio): `python -m bench.picows_server --port P`.

Subscribers connect to `/`; the load client asks for broadcasts on `/control` with
`{"publish": K, "seq0": S, "size": B, "t": ms?}` (the protocol of bench/ws_broadcast_server.py) and gets
`{"done": K}` once the K messages were written to every subscriber. Each message is encoded once and written to
every subscriber's transport with `WSTransport.send()` (compression off), yielding to the loop between messages.
Runs on uvloop when it is installed, as the other baselines do.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal

from picows import WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server

from bench.messages import bench_message, now_ms, parse_control
from bench.ws_broadcast_server import loop_factory

SUBSCRIBERS: set[WSTransport] = set()


class Subscriber(WSListener):
    def on_ws_connected(self, transport: WSTransport) -> None:
        SUBSCRIBERS.add(transport)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        SUBSCRIBERS.discard(transport)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()


class Control(WSListener):
    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.TEXT:
            asyncio.get_running_loop().create_task(self.broadcast(transport, frame.get_payload_as_utf8_text()))
        elif frame.msg_type == WSMsgType.CLOSE:
            transport.disconnect()

    async def broadcast(self, transport: WSTransport, text: str) -> None:
        count, seq0, size, t = parse_control(text)
        for seq in range(seq0, seq0 + count):
            data = bench_message(seq, t if t is not None else now_ms(), size).encode()
            for sub in list(SUBSCRIBERS):
                sub.send(WSMsgType.TEXT, data)
            await asyncio.sleep(0)  # let the loop breathe between messages, as the other baselines do
        transport.send(WSMsgType.TEXT, json.dumps({"done": count}).encode())


def listener(request: WSUpgradeRequest) -> WSListener:
    return Control() if request.path == b"/control" else Subscriber()


async def main(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set_result, None)
    server = await ws_create_server(listener, host, port, backlog=4096)
    async with server:
        await stop


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(main(args.host, args.port))
