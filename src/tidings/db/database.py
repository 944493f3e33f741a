"""The built-in users' database: engine, sessions, migrations, and the user queries authentication needs.

Part of the ``[users]`` extra; the hub core never imports it (a host with its own ``authenticate`` has no
database). Passwords are hashed and verified off the event loop (:class:`~tidings.users.passwords.PasswordPool`).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Row, bindparam, delete, exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from tidings.auth import Credentials
from tidings.connection import UserInfo
from tidings.db.models import RevokedToken, User, utcnow
from tidings.errors import TidingsError
from tidings.files import ensure_private_file
from tidings.users.passwords import PasswordPool

__all__ = ["AccountInfo", "AccountState", "Database", "DuplicateUser", "LastAdmin", "UserChange"]

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
#: The Alembic branch of the built-in users' tables (the crawler platform's is ``platform@head``).
USERS_HEAD = "users@head"


class DuplicateUser(TidingsError):
    """A user with that name exists already."""


class LastAdmin(Exception):
    """The change would leave no active administrator."""


@dataclass(frozen=True, slots=True)
class UserChange:
    """What an account change did, for closing the user's open sockets (see :mod:`tidings.users.service`)."""

    user: User
    credentials_changed: bool = False  #: password changed: older tokens are invalid
    disabled: bool = False  #: deactivated or deleted
    role_changed: bool = False


@dataclass(frozen=True, slots=True)
class AccountInfo(UserInfo):
    """A built-in account behind a connection: :class:`UserInfo` and the credential version it signed in with
    (what :class:`~tidings.users.sweep.AccountSweep` compares with the database)."""

    credential_version: int = 0


@dataclass(frozen=True, slots=True)
class AccountState:
    """What an account's row says now, for re-checking open connections."""

    credential_version: int
    is_active: bool
    role: str


def user_info(user: User) -> AccountInfo:
    """The connection-side view of a user row."""
    return AccountInfo(
        id=user.id, username=user.username, role=user.role, credential_version=user.credential_version or 0
    )


_CREDENTIALS = select(
    User.id, User.username, User.role, User.is_active, User.credential_version.label("version")
).where(User.username == bindparam("username"))
_REVOKED = select(RevokedToken.token_id).where(RevokedToken.token_id == bindparam("token_id"))
_TOKEN_CREDENTIALS = _CREDENTIALS.add_columns(
    exists().where(RevokedToken.token_id == bindparam("token_id")).label("revoked")
)


def _credentials(row: Row[*tuple[Any, ...]]) -> Credentials | None:
    """The :class:`Credentials` of a row of :data:`_CREDENTIALS` (None for an inactive account)."""
    if not row.is_active:
        return None
    info = AccountInfo(id=row.id, username=row.username, role=row.role, credential_version=row.version or 0)
    return Credentials(info, info.credential_version)


def run_migrations(url: str, target: str = USERS_HEAD) -> None:
    """Bring the schema at ``url`` to ``target`` (an Alembic revision or ``branch@head``). Blocking."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(cfg, target)


class Database:
    """An async SQLAlchemy engine and session factory for one database URL."""

    def __init__(self, url: str, *, passwords: PasswordPool | None = None) -> None:
        self.url = url
        self.passwords = passwords or PasswordPool()
        if url.startswith("sqlite"):
            path = url.split("///", 1)[-1]
            if path and path != ":memory:" and not path.startswith("file:"):
                ensure_private_file(Path(path.split("?", 1)[0]))  # SQLite gives its journals the file's mode
        # A pre-ping (one more round trip per checkout) finds connections a database server dropped; an SQLite
        # file has no server to drop them.
        self.engine: AsyncEngine = create_async_engine(url, pool_pre_ping=not url.startswith("sqlite"))
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    async def migrate(self, target: str = USERS_HEAD) -> None:
        """Apply pending migrations of ``target`` (default: the users' branch)."""
        await asyncio.to_thread(run_migrations, self.url, target)

    async def dispose(self) -> None:
        """Close pooled connections and the password threads."""
        await self.engine.dispose()
        self.passwords.close()

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session that commits on success and rolls back on error."""
        async with self.sessions() as session:
            try:
                yield session
                await session.commit()
            except BaseException:
                await session.rollback()
                raise

    async def create_user(self, username: str, password: str, role: str = "user") -> User:
        """Create an account; raises :class:`DuplicateUser` if the name is taken."""
        if role not in ("admin", "user"):
            raise ValueError("role must be 'admin' or 'user'")
        password_hash = await self.passwords.hash(password)
        user = User(username=username, password_hash=password_hash, role=role, is_active=True, credential_version=0)
        try:
            async with self.session() as session:
                session.add(user)
        except IntegrityError:
            raise DuplicateUser(username) from None
        return user

    async def get_user(self, username: str) -> User | None:
        """The user named ``username``, active or not."""
        async with self.sessions() as session:
            return (await session.execute(select(User).where(User.username == username))).scalar_one_or_none()

    async def get_user_by_id(self, user_id: int) -> User | None:
        """The user with ``user_id``."""
        async with self.sessions() as session:
            return await session.get(User, user_id)

    async def active_user(self, username: str) -> UserInfo | None:
        """The active user named ``username``."""
        user = await self.get_user(username)
        return user_info(user) if user is not None and user.is_active else None

    async def credentials(self, username: str) -> Credentials | None:
        """The active user named ``username`` and their credential version (for token authentication).

        Asked on every authenticated request and connection, so it reads the four columns it needs (no ORM
        object, no session): a third of the time of loading the ``User``."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(_CREDENTIALS, {"username": username})).first()
        return None if row is None else _credentials(row)

    async def token_credentials(self, username: str, token_id: str) -> tuple[Credentials | None, bool | None]:
        """:meth:`credentials` and whether ``token_id`` was revoked (:meth:`is_revoked`), in one query: what a
        token-authenticated request asks every time. The second item is None when no user is named
        ``username`` (the query answers nothing then; ask :meth:`is_revoked` if it matters)."""
        params = {"username": username, "token_id": token_id}
        async with self.engine.connect() as conn:
            row = (await conn.execute(_TOKEN_CREDENTIALS, params)).first()
        if row is None:
            return None, None
        return _credentials(row), bool(row.revoked)

    async def account_states(self, user_ids: Sequence[int]) -> dict[int, AccountState]:
        """The current state of the accounts ``user_ids`` (deleted ones are missing), in one query."""
        query = select(User.id, User.credential_version, User.is_active, User.role).where(User.id.in_(user_ids))
        async with self.sessions() as session:
            rows = (await session.execute(query)).all()
        return {row[0]: AccountState(row[1] or 0, bool(row[2]), row[3]) for row in rows}

    async def set_password(self, username: str, password: str) -> User | None:
        """Replace a user's password (older tokens stop working); None if there is no such user."""
        password_hash = await self.passwords.hash(password)
        async with self.session() as session:
            user = (await session.execute(select(User).where(User.username == username))).scalar_one_or_none()
            if user is None:
                return None
            user.password_hash = password_hash
            user.credential_version = (user.credential_version or 0) + 1
        return user

    async def update_user(
        self,
        user_id: int,
        *,
        role: str | None = None,
        is_active: bool | None = None,
        password: str | None = None,
    ) -> UserChange | None:
        """Change an account; None if there is none. Raises :class:`LastAdmin` if no active admin would be left.

        A password change or a deactivation bumps the credential version (older tokens stop working)."""
        if role is not None and role not in ("admin", "user"):
            raise ValueError("role must be 'admin' or 'user'")
        password_hash = None if password is None else await self.passwords.hash(password)
        async with self.session() as session:
            user = await session.get(User, user_id, with_for_update=True)
            if user is None:
                return None
            loses_admin = user.role == "admin" and user.is_active and (role == "user" or is_active is False)
            if loses_admin:
                query = select(func.count(User.id)).where(User.role == "admin", User.is_active.is_(True))
                if int((await session.execute(query)).scalar_one()) <= 1:
                    raise LastAdmin
            role_changed = role is not None and role != user.role
            disabled = is_active is False and user.is_active
            if role is not None:
                user.role = role
            if is_active is not None:
                user.is_active = is_active
            if password_hash is not None:
                user.password_hash = password_hash
            if password_hash is not None or disabled:
                user.credential_version = (user.credential_version or 0) + 1
            await session.flush()
        changed = password_hash is not None
        return UserChange(user, credentials_changed=changed, disabled=disabled, role_changed=role_changed)

    async def delete_user(self, user_id: int) -> User | None:
        """Delete an account (and, by cascade, what it owns); None if there is none. :class:`LastAdmin` applies."""
        async with self.session() as session:
            user = await session.get(User, user_id, with_for_update=True)
            if user is None:
                return None
            if user.role == "admin" and user.is_active:
                query = select(func.count(User.id)).where(User.role == "admin", User.is_active.is_(True))
                if int((await session.execute(query)).scalar_one()) <= 1:
                    raise LastAdmin
            await session.delete(user)
        return user

    async def check_password(self, username: str, password: str) -> User | None:
        """The active user if ``password`` is right, else None (verified off the event loop)."""
        user = await self.get_user(username)
        if user is None or not user.is_active:
            await self.passwords.verify(password, None)  # same work as a real check: no user-name oracle
            return None
        return user if await self.passwords.verify(password, user.password_hash) else None

    async def revoke_token(self, token_id: str, user_id: int, expires_at: float) -> None:
        """Revoke a token id until ``expires_at`` (Unix time); expired entries are purged on the way."""
        expiry = datetime.fromtimestamp(expires_at, UTC)
        async with self.session() as session:
            await session.execute(delete(RevokedToken).where(RevokedToken.expires_at < utcnow()))
            if await session.get(RevokedToken, token_id) is None:
                session.add(RevokedToken(token_id=token_id, user_id=user_id, expires_at=expiry))

    async def is_revoked(self, token_id: str) -> bool:
        """Whether ``token_id`` was revoked by a logout (asked on every request: a plain query, no session)."""
        async with self.engine.connect() as conn:
            return (await conn.execute(_REVOKED, {"token_id": token_id})).first() is not None

    async def user_count(self) -> int:
        """How many accounts exist."""
        async with self.sessions() as session:
            return int((await session.execute(select(func.count(User.id)))).scalar_one())

    async def ensure_admin(self, username: str) -> str | None:
        """On an empty database, create the admin account; returns its random password (shown once)."""
        if await self.user_count() > 0:
            return None
        password = secrets.token_urlsafe(12)
        try:
            await self.create_user(username, password, role="admin")
        except DuplicateUser:
            return None
        return password
