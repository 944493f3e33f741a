"""Re-checks the accounts behind this node's open connections against the database.

A revocation made through this node's own routes closes the sockets at once (cluster-wide through the broker). A
change made elsewhere -- ``tidings users passwd`` in another process while the node runs with the memory broker,
another admin tool, an SQL console -- has no way to reach the node; this sweep finds it within
``TIDINGS_ACCOUNT_CHECK_INTERVAL`` seconds: a connection whose account is gone or inactive closes with 1008
"Account disabled", one opened with an older credential version with 1008 "Credentials changed", and one whose
role changed with 4004 "Permissions changed" (the client reconnects with its new rights). Each node checks only
its own connections, one query per :data:`CHUNK` users, and none while no account is connected. The work of one
tick is bounded: at most :data:`BUDGET` connected accounts are checked per tick, in turn, so up to that many a
change is found within one interval, and with more a full pass takes ``accounts / BUDGET`` intervals (100,000
connected accounts: 50 s at the default 1 s) while the node spends a few milliseconds a second on it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from tidings.db.database import AccountInfo, AccountState, Database
from tidings.protocol import CloseCode

if TYPE_CHECKING:
    from tidings.hub import Hub

__all__ = ["BUDGET", "CHUNK", "AccountSweep", "verdict"]

#: Accounts per query.
CHUNK = 500
#: Accounts checked per tick.
BUDGET = 2000

logger = logging.getLogger("tidings.users")


def verdict(info: AccountInfo, state: AccountState | None) -> tuple[int, str] | None:
    """The close code and reason a connection of ``info`` gets now that its row is ``state``; None: it stays."""
    if state is None or not state.is_active:
        return CloseCode.POLICY_VIOLATION, "Account disabled"
    if state.credential_version != info.credential_version:
        return CloseCode.POLICY_VIOLATION, "Credentials changed"
    if state.role != info.role:
        return CloseCode.PERMISSIONS_CHANGED, "Permissions changed"
    return None


def _chunks(ids: Iterable[int], size: int) -> Iterator[list[int]]:
    it = iter(ids)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


class AccountSweep:
    """Every ``interval`` seconds, closes the local connections whose account changed behind the node's back."""

    def __init__(self, db: Database, hub: Hub, interval: float, *, budget: int = BUDGET) -> None:
        self.db = db
        self.hub = hub
        self.interval = interval
        self.budget = budget
        self.closed = 0
        self._turn: list[int] = []  # accounts still to check in the current pass, next last
        # account -> (its state, its newest connection's id) when all its connections were last found matching:
        # while both stay the same its connections are not looked at again (a user with thousands of sockets costs
        # a dict lookup a tick); a connection opened since is newer (the hub keeps them in arrival order)
        self._verified: dict[int, tuple[AccountState, str]] = {}

    async def check(self) -> int:
        """One tick: check the next ``budget`` connected accounts (a new pass starts when the last one ended);
        returns how many connections it closed."""
        by_user = self.hub.by_user
        if not self._turn:
            self._turn = [uid for uid in by_user if isinstance(uid, int)]
            self._turn.reverse()
            self._verified = {uid: seen for uid, seen in self._verified.items() if uid in by_user}
        turn = self._turn
        take = turn[-self.budget :]
        del turn[-self.budget :]
        take.reverse()
        closed = 0
        for chunk in _chunks((uid for uid in take if uid in by_user), CHUNK):
            states = await self.db.account_states(chunk)
            for uid in chunk:
                state = states.get(uid)
                conns = by_user.get(uid)
                if not conns:
                    self._verified.pop(uid, None)
                    continue
                newest = next(reversed(conns))
                if state is not None and self._verified.get(uid) == (state, newest):
                    continue
                for conn in list(conns.values()):
                    info = conn.user
                    if not isinstance(info, AccountInfo):
                        continue  # not a built-in account (a host's own authenticate)
                    decided = verdict(info, state)
                    if decided is not None:
                        logger.info("%s: %s (account changed outside this node)", conn, decided[1])
                        conn.close(*decided)
                        closed += 1
                if state is not None:
                    self._verified[uid] = (state, newest)
        self.closed += closed
        return closed

    async def run(self) -> None:
        """Check forever, every ``interval`` seconds; a failed pass (database unavailable) is logged and retried."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except Exception as exc:  # CancelledError is not an Exception: cancelling still stops the loop
                logger.warning("account check failed: %s", exc)
