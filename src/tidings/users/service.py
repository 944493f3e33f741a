"""The built-in users wired to a node: database, token authenticator, routes, revocation, first admin."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import APIRouter

from tidings.auth import TokenAuthenticator
from tidings.db import Database
from tidings.db.database import UserChange
from tidings.protocol import CloseCode
from tidings.settings import Settings
from tidings.users.limiter import FailureLimiter
from tidings.users.passwords import PasswordPool
from tidings.users.sweep import AccountSweep

if TYPE_CHECKING:
    from tidings.node import Node

__all__ = ["BuiltinUsers"]

logger = logging.getLogger("tidings.users")

#: Seconds a token-authenticated user is reused before the database is asked again on HTTP requests.
USER_CACHE_TTL = 0.0  # off: role changes and deactivations take effect on the next request


class BuiltinUsers:
    """Accounts in ``TIDINGS_DATABASE_URL``: the authenticator, the routes, and the revocation of access."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.passwords = PasswordPool(settings.password_hash_workers)
        self.db = Database(settings.resolved_database_url, passwords=self.passwords)
        self.authenticator = TokenAuthenticator(
            settings.resolved_secret_key,
            self.db.credentials,
            cache_ttl=USER_CACHE_TTL,
            is_revoked=self.db.is_revoked,
            token_lookup=self.db.token_credentials,
        )
        self.limit_ip = FailureLimiter(settings.login_max_failures_per_ip, settings.login_failure_window)
        self.limit_user = FailureLimiter(settings.login_max_failures_per_user, settings.login_failure_window)
        self._node: Node | None = None
        self.admin_password: str | None = None

    @property
    def node(self) -> Node:
        """The node whose sockets a revocation closes (set by :meth:`bind`)."""
        if self._node is None:
            raise RuntimeError("BuiltinUsers is not bound to a node")
        return self._node

    def bind(self, node: Node) -> APIRouter:
        """Attach to ``node``; returns the routes (``/auth/*``, ``/api/admin/users``)."""
        from tidings.users.api import build_users_router

        self._node = node
        return build_users_router(self)

    async def revoke(self, user_id: int, username: str, code: int, reason: str) -> None:
        """Close ``user_id``'s sockets on every node with ``code`` / ``reason`` (tokens were already refused)."""
        self.authenticator.forget(username)
        await self.node.disconnect_user(user_id, code, reason)

    async def apply(self, change: UserChange) -> None:
        """Close the sockets an account change invalidates: 1008 for a deactivation or a new password (terminal),
        4004 for a role change (the client reconnects with its new rights)."""
        user = change.user
        if change.disabled:
            await self.revoke(user.id, user.username, CloseCode.POLICY_VIOLATION, "Account disabled")
        elif change.credentials_changed:
            await self.revoke(user.id, user.username, CloseCode.POLICY_VIOLATION, "Credentials changed")
        elif change.role_changed:
            await self.revoke(user.id, user.username, CloseCode.PERMISSIONS_CHANGED, "Permissions changed")

    @asynccontextmanager
    async def run(self) -> AsyncIterator[BuiltinUsers]:
        """Migrate the users' tables, create the first administrator on an empty database (its password is
        printed once), dispose of the engine on exit."""
        await self.db.migrate()
        self.admin_password = await self.db.ensure_admin(self.settings.admin_username)
        if self.admin_password is not None:
            banner = (
                f"Created the administrator account: username '{self.settings.admin_username}', "
                f"password '{self.admin_password}' (shown once; change it with 'tidings users passwd')"
            )
            print(banner, flush=True)
        sweep: asyncio.Task[None] | None = None
        interval = self.settings.account_check_interval
        if self._node is not None and interval > 0:
            sweep = asyncio.create_task(AccountSweep(self.db, self._node.hub, interval).run(), name="account-sweep")
        try:
            yield self
        finally:
            if sweep is not None:
                sweep.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sweep
            await self.db.dispose()
