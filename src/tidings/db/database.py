"""The database handle: engine, sessions, migrations, and the user queries authentication needs."""

from __future__ import annotations

import asyncio
import functools
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from tidings.auth import hash_password, verify_password
from tidings.connection import UserInfo
from tidings.db.models import User
from tidings.files import ensure_private_file

__all__ = ["Database", "DuplicateUser"]

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


class DuplicateUser(Exception):
    """A user with that name exists already."""


@functools.cache
def _dummy_hash() -> str:
    return hash_password(secrets.token_hex(8))


def user_info(user: User) -> UserInfo:
    """The connection-side view of a user row."""
    return UserInfo(id=user.id, username=user.username, role=user.role)


def run_migrations(url: str) -> None:
    """Bring the schema at ``url`` to the latest Alembic revision (blocking; call from a thread)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(cfg, "head")


class Database:
    """An async SQLAlchemy engine and session factory for one database URL."""

    def __init__(self, url: str) -> None:
        self.url = url
        if url.startswith("sqlite"):
            path = url.split("///", 1)[-1]
            if path and path != ":memory:" and not path.startswith("file:"):
                ensure_private_file(Path(path.split("?", 1)[0]))  # SQLite gives its journals the file's mode
        self.engine: AsyncEngine = create_async_engine(url, pool_pre_ping=True)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    async def migrate(self) -> None:
        """Apply pending migrations."""
        await asyncio.to_thread(run_migrations, self.url)

    async def dispose(self) -> None:
        """Close pooled connections."""
        await self.engine.dispose()

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
        user = User(username=username, password_hash=hash_password(password), role=role, is_active=True)
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
        """The active user named ``username`` (for token authentication)."""
        user = await self.get_user(username)
        return user_info(user) if user is not None and user.is_active else None

    async def set_password(self, username: str, password: str) -> bool:
        """Replace a user's password; False if there is no such user."""
        async with self.session() as session:
            user = (await session.execute(select(User).where(User.username == username))).scalar_one_or_none()
            if user is None:
                return False
            user.password_hash = hash_password(password)
        return True

    async def check_password(self, username: str, password: str) -> User | None:
        """The active user if ``password`` is right, else None."""
        user = await self.get_user(username)
        if user is None or not user.is_active:
            verify_password(password, _dummy_hash())  # same work as a real check: no user-name oracle
            return None
        return user if verify_password(password, user.password_hash) else None

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
