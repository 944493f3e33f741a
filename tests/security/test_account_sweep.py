"""The account re-check (``tidings.users.sweep``) in isolation: a real SQLite database, the hub's registry, and
connections over the in-memory test transport; the end-to-end cases (CLI and SQL edits against a running server)
are in ``test_revocation.py``."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import update

from tests.test_hub import FakeTransport
from tidings.connection import Connection, UserInfo
from tidings.db import Database, User
from tidings.db.database import AccountInfo
from tidings.hub import Hub
from tidings.users.sweep import AccountSweep


async def _setup(tmp_path: Path, users: int) -> tuple[Database, Hub, list[tuple[Connection, FakeTransport]]]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'users.db'}")
    await db.migrate()
    hub = Hub()
    conns = []
    for i in range(users):
        creds = await db.credentials((await db.create_user(f"u{i}", "pw")).username)
        assert creds is not None and isinstance(creds.user, AccountInfo)
        transport = FakeTransport()
        conn = Connection(creds.user, transport)
        hub.add(conn)
        conns.append((conn, transport))
    return db, hub, conns


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_each_tick_checks_at_most_its_budget_and_a_pass_reaches_everyone(tmp_path: Path) -> None:
    db, hub, conns = await _setup(tmp_path, 5)
    try:
        async with db.sessions() as session:
            await session.execute(update(User).values(is_active=False))
            await session.commit()
        sweep = AccountSweep(db, hub, 1.0, budget=2)
        closed_per_tick = []
        for _ in range(3):
            closed_per_tick.append(await sweep.check())
            await _settle()
        assert closed_per_tick == [2, 2, 1]  # in turn, in the order the accounts connected
        assert [t.closed for _, t in conns] == [(1008, "Account disabled")] * 5
    finally:
        await db.dispose()


async def test_unchanged_accounts_and_other_identities_stay_open(tmp_path: Path) -> None:
    db, hub, conns = await _setup(tmp_path, 2)
    host_user = Connection(UserInfo(id=1, username="u0"), FakeTransport())  # same id, not a built-in account
    hub.add(host_user)
    try:
        sweep = AccountSweep(db, hub, 1.0)
        assert await sweep.check() == 0
        async with db.sessions() as session:
            await session.execute(update(User).where(User.username == "u1").values(role="admin"))
            await session.commit()
        assert await sweep.check() == 1
        await _settle()
        assert conns[0][1].closed is None and host_user.transport.closed is None  # type: ignore[attr-defined]
        assert conns[1][1].closed == (4004, "Permissions changed")
    finally:
        await db.dispose()


async def test_a_connection_opened_after_a_check_is_checked_next_time(tmp_path: Path) -> None:
    """Accounts found unchanged are not rescanned, but a socket opened since (here one that authenticated just
    before a password change) is still found."""
    db, hub, conns = await _setup(tmp_path, 1)
    try:
        sweep = AccountSweep(db, hub, 1.0)
        assert await sweep.check() == 0
        assert await sweep.check() == 0
        first = conns[0][0].user
        assert isinstance(first, AccountInfo)
        stale = AccountInfo(id=first.id, username=first.username, role=first.role, credential_version=-1)
        late = Connection(stale, FakeTransport())
        hub.add(late)
        assert await sweep.check() == 1
        await _settle()
        assert late.transport.closed == (1008, "Credentials changed")  # type: ignore[attr-defined]
        assert conns[0][1].closed is None
    finally:
        await db.dispose()
