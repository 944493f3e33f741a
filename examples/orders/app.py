"""A shop with its own users that pushes live order updates to the browser through Tidings.

Run it::

    pip install tidings            # the hub only: no database, no users of its own
    uvicorn app:app --port 8001    # from this directory; open http://127.0.0.1:8001

The app keeps its users, sessions and orders in its own SQLite file (``ORDERS_DB``, default ``orders.db``), with
UUID user ids and a session cookie. Tidings only asks it who a connection is (``authenticate``) and which
``orders:<id>`` channels that user may watch (the namespace's ``subscribe`` predicate).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import secrets
import sqlite3
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, Form, HTTPException, Request, status
from fastapi.responses import FileResponse, RedirectResponse
from pydantic import BaseModel
from starlette.requests import HTTPConnection

from tidings import Namespace, Tidings, UserInfo

HERE = Path(__file__).resolve().parent
DB_PATH = Path(os.environ.get("ORDERS_DB", "orders.db"))
SESSION_COOKIE = "shop_session"


# ---- the app's own storage (plain sqlite3, run off the event loop) -------------------------------------------
def _db() -> sqlite3.Connection:
    conn = sqlite3.connect(DB_PATH)
    conn.row_factory = sqlite3.Row
    return conn


def _init() -> None:
    with _db() as conn:
        conn.executescript(
            """
            CREATE TABLE IF NOT EXISTS users (id TEXT PRIMARY KEY, name TEXT UNIQUE NOT NULL, pw TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS sessions (token TEXT PRIMARY KEY, user_id TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, owner TEXT NOT NULL, item TEXT NOT NULL,
                                               status TEXT NOT NULL);
            """
        )


def _hash(password: str, salt: bytes) -> str:
    return salt.hex() + ":" + hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1).hex()


def _check(password: str, stored: str) -> bool:
    salt, _ = stored.split(":", 1)
    return hmac.compare_digest(_hash(password, bytes.fromhex(salt)), stored)


def _query(sql: str, *args: object) -> list[sqlite3.Row]:
    with _db() as conn:
        return conn.execute(sql, args).fetchall()


async def query(sql: str, *args: object) -> list[sqlite3.Row]:
    return await asyncio.to_thread(_query, sql, *args)


async def user_of_session(token: str | None) -> sqlite3.Row | None:
    if not token:
        return None
    rows = await query("SELECT users.* FROM sessions JOIN users ON users.id = sessions.user_id WHERE token = ?", token)
    return rows[0] if rows else None


# ---- Tidings: who a connection is, and the orders channels --------------------------------------------------
async def authenticate(conn: HTTPConnection) -> UserInfo | None:
    """The WebSocket handshake (or a REST request) carries the session cookie: the same login as the pages."""
    user = await user_of_session(conn.cookies.get(SESSION_COOKIE))
    return None if user is None else UserInfo(id=user["id"], username=user["name"])


async def owns_order(user: UserInfo, order_id: str) -> bool:
    """``orders:<order_id>``: only the order's owner may subscribe."""
    return bool(await query("SELECT 1 FROM orders WHERE id = ? AND owner = ?", order_id, str(user.id)))


class OrderEvent(BaseModel):
    """Every publication on ``orders:<id>`` has this shape (Tidings validates it)."""

    order_id: str
    status: Literal["placed", "packed", "shipped", "delivered"]
    updated_at: datetime


hub = Tidings(authenticate=authenticate)
hub.namespace("orders", Namespace(subscribe=owns_order, publish="server", history=50, model=OrderEvent))

app = FastAPI(title="Orders example", lifespan=hub.lifespan)
app.include_router(hub.router)  # /ws/authenticated, /api/publish (admins), /healthz ...
_init()


# ---- the app's own pages and endpoints ------------------------------------------------------------------------
async def current_user(request: Request) -> sqlite3.Row:
    user = await user_of_session(request.cookies.get(SESSION_COOKIE))
    if user is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "Sign in first")
    return user


CurrentUser = Annotated[sqlite3.Row, Depends(current_user)]


@app.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(HERE / "index.html")


@app.post("/signup")
async def signup(username: Annotated[str, Form()], password: Annotated[str, Form()]) -> RedirectResponse:
    """Create an account (a UUID id) and sign in."""
    user_id = str(uuid.uuid4())
    try:
        await query("INSERT INTO users VALUES (?, ?, ?)", user_id, username, _hash(password, secrets.token_bytes(16)))
    except sqlite3.IntegrityError:
        raise HTTPException(status.HTTP_409_CONFLICT, "That name is taken") from None
    return await _session_for(user_id)


@app.post("/login")
async def login(username: Annotated[str, Form()], password: Annotated[str, Form()]) -> RedirectResponse:
    rows = await query("SELECT * FROM users WHERE name = ?", username)
    if not rows or not await asyncio.to_thread(_check, password, rows[0]["pw"]):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "Wrong name or password")
    return await _session_for(rows[0]["id"])


async def _session_for(user_id: str) -> RedirectResponse:
    token = secrets.token_urlsafe(32)
    await query("INSERT INTO sessions VALUES (?, ?)", token, user_id)
    response = RedirectResponse("/", status.HTTP_303_SEE_OTHER)
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict")
    return response


@app.post("/logout")
async def logout(request: Request, user: CurrentUser) -> RedirectResponse:
    await query("DELETE FROM sessions WHERE token = ?", request.cookies.get(SESSION_COOKIE))
    await hub.disconnect_user(user["id"], 1008, "Signed out")  # close this user's sockets, on every node
    response = RedirectResponse("/", status.HTTP_303_SEE_OTHER)
    response.delete_cookie(SESSION_COOKIE)
    return response


@app.get("/me")
async def me(user: CurrentUser) -> dict[str, object]:
    orders = await query("SELECT id, item, status FROM orders WHERE owner = ? ORDER BY rowid", user["id"])
    return {"user_id": user["id"], "username": user["name"], "orders": [dict(row) for row in orders]}


class NewOrder(BaseModel):
    item: str


@app.post("/orders", status_code=status.HTTP_201_CREATED)
async def place_order(body: NewOrder, user: CurrentUser) -> dict[str, str]:
    order_id = uuid.uuid4().hex[:12]
    await query("INSERT INTO orders VALUES (?, ?, ?, 'placed')", order_id, user["id"], body.item)
    return {"id": order_id, "item": body.item, "status": "placed"}


class StatusChange(BaseModel):
    status: str


@app.post("/orders/{order_id}/status")
async def set_status(order_id: str, body: StatusChange) -> dict[str, object]:
    """The warehouse moves an order along (no auth here, to keep the example short): the owner's browser hears it.

    ``hub.publish`` validates the event against ``OrderEvent``: an unknown status is a ``ValueError`` (422 here)."""
    if not await query("SELECT 1 FROM orders WHERE id = ?", order_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No such order")
    event = {"order_id": order_id, "status": body.status, "updated_at": datetime.now(UTC).isoformat()}
    try:
        pub = await hub.publish(f"orders:{order_id}", event)
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    await query("UPDATE orders SET status = ? WHERE id = ?", body.status, order_id)
    return {"order_id": order_id, "status": body.status, "offset": pub.offset}
