"""Password hashing (Argon2id through pwdlib), and the same off the event loop in a bounded thread pool.

:func:`hash_password` / :func:`verify_password` block for ~100 ms each; servers call :func:`ahash_password` /
:func:`averify_password`, which run them on at most ``TIDINGS_PASSWORD_HASH_WORKERS`` threads so that a flood of
logins queues there instead of stalling every WebSocket on the event loop.
"""

from __future__ import annotations

import asyncio
import functools
import secrets
from concurrent.futures import ThreadPoolExecutor

from pwdlib import PasswordHash

__all__ = ["PasswordPool", "ahash_password", "averify_password", "hash_password", "verify_password"]

_hasher = PasswordHash.recommended()


def hash_password(password: str) -> str:
    """Hash a password (Argon2id). Blocking."""
    return _hasher.hash(password)


def verify_password(password: str, password_hash: str) -> bool:
    """Check a password against its hash. Blocking."""
    try:
        return _hasher.verify(password, password_hash)
    except Exception:
        return False


@functools.cache
def dummy_hash() -> str:
    """A hash to verify against when the user does not exist (same work: no user-name oracle)."""
    return hash_password(secrets.token_hex(8))


class PasswordPool:
    """A bounded thread pool for password hashing and verification."""

    def __init__(self, workers: int = 2) -> None:
        self.workers = max(1, workers)
        self._pool: ThreadPoolExecutor | None = None

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="tidings-password")
        return self._pool

    async def hash(self, password: str) -> str:
        """:func:`hash_password` on the pool."""
        return await asyncio.get_running_loop().run_in_executor(self._executor(), hash_password, password)

    async def verify(self, password: str, password_hash: str | None) -> bool:
        """:func:`verify_password` on the pool; ``None`` verifies against a dummy hash and returns False."""
        loop = asyncio.get_running_loop()
        if password_hash is None:
            await loop.run_in_executor(self._executor(), verify_password, password, dummy_hash())
            return False
        return await loop.run_in_executor(self._executor(), verify_password, password, password_hash)

    def close(self) -> None:
        """Stop the threads (waiting for running jobs)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


_default_pool = PasswordPool()


async def ahash_password(password: str) -> str:
    """:func:`hash_password` off the event loop (the module's default pool)."""
    return await _default_pool.hash(password)


async def averify_password(password: str, password_hash: str | None) -> bool:
    """:func:`verify_password` off the event loop (the module's default pool)."""
    return await _default_pool.verify(password, password_hash)
