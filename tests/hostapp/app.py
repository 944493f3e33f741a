"""A host app with its own ``authenticate`` (``X-User: <id>:<name>``) whose hooks append JSON lines to
``$HOOK_LOG``: what the hook tests read, across processes."""

from __future__ import annotations

import json
import os

from fastapi import FastAPI
from starlette.requests import HTTPConnection

from tidings import ConnInfo, Namespace, Tidings, UserInfo

LOG = os.environ.get("HOOK_LOG", "hooks.log")
NODE = os.environ.get("HOOK_NODE", "?")


async def authenticate(conn: HTTPConnection) -> UserInfo | None:
    who = conn.headers.get("x-user", "")
    user_id, _, name = who.partition(":")
    if not name:
        return None
    return UserInfo(id=int(user_id) if user_id.isdigit() else user_id, username=name)


def record(**fields: object) -> None:
    with open(LOG, "a") as f:
        f.write(json.dumps({"node": NODE, **fields}) + "\n")


hub = Tidings(authenticate=authenticate)
hub.namespace("room", Namespace(publish="clients", presence=True))


@hub.on_connect
async def connected(user: UserInfo, conn: ConnInfo) -> None:
    record(hook="connect", user=user.id, conn=conn.id)


@hub.on_disconnect
async def disconnected(user: UserInfo, conn: ConnInfo, code: int) -> None:
    record(hook="disconnect", user=user.id, conn=conn.id, code=code)


@hub.on_leave
async def left(user: UserInfo, channel: str) -> None:
    record(hook="leave", user=user.id, channel=channel)


app = FastAPI(lifespan=hub.lifespan)
app.include_router(hub.router)
