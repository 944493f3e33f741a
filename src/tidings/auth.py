"""Access tokens (HS256 JWT, ``sub`` = username, ``exp``) and password hashing."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import jwt
from pwdlib import PasswordHash

from tidings.connection import UserInfo
from tidings.errors import TidingsError

__all__ = [
    "MAX_USER_CACHE_TTL",
    "AuthError",
    "Authenticator",
    "TokenAuthenticator",
    "VerifiedToken",
    "create_access_token",
    "decode_access_token",
    "hash_password",
    "verify_password",
]

ALGORITHM = "HS256"
_hasher = PasswordHash.recommended()


class AuthError(TidingsError):
    """Authentication failed; ``reason`` is safe to show the client (it becomes a 1008 close reason)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """The claims Tidings uses from a valid token."""

    username: str
    expires_at: float


def create_access_token(username: str, secret: str, ttl: int = 3600) -> str:
    """Sign a token for ``username`` valid for ``ttl`` seconds."""
    now = int(time.time())
    return jwt.encode({"sub": username, "iat": now, "exp": now + ttl}, secret, algorithm=ALGORITHM)


def decode_access_token(token: str, secret: str) -> VerifiedToken:
    """Verify signature, algorithm (HS256 only) and expiry; raise :class:`AuthError` otherwise."""
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], options={"require": ["exp", "sub"]})
    except jwt.ExpiredSignatureError:
        raise AuthError("Token expired") from None
    except jwt.PyJWTError:
        raise AuthError("Invalid token") from None
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise AuthError("Invalid token")
    return VerifiedToken(sub, float(claims["exp"]))


def hash_password(password: str) -> str:
    """Hash a password (Argon2id)."""
    return _hasher.hash(password)


def verify_password(password: str, password_hash: str) -> bool:
    """Check a password against its hash."""
    try:
        return _hasher.verify(password, password_hash)
    except Exception:
        return False


class Authenticator(Protocol):
    """Turns a bearer token into the user it belongs to."""

    async def authenticate(self, token: str) -> tuple[UserInfo, float]:
        """Return the active user and the token's expiry time, or raise :class:`AuthError`."""


UserLookup = Callable[[str], Awaitable[UserInfo | None]]


#: Longest time a looked-up user may be reused: a deactivation or role change takes effect within it.
MAX_USER_CACHE_TTL = 2.0
_USER_CACHE_MAX = 1024


class TokenAuthenticator:
    """Verifies Tidings JWTs and looks the user up (active users only) with ``lookup``.

    :meth:`authenticate` (WebSocket connections) asks ``lookup`` every time, so a deactivation takes effect on the
    next connection. :meth:`authenticate_request` (bearer-token HTTP requests) may reuse an active user found by
    ``lookup`` for ``cache_ttl`` seconds (at most :data:`MAX_USER_CACHE_TTL`), so a client making many requests
    (``POST /api/publish`` in a loop) does not cost a database query each. Both check every token's signature and
    expiry on every call; users not found are never cached.
    """

    def __init__(self, secret: str, lookup: UserLookup, *, cache_ttl: float = 0.0) -> None:
        self._secret = secret
        self._lookup = lookup
        self._ttl = max(0.0, min(cache_ttl, MAX_USER_CACHE_TTL))
        self._cache: dict[str, tuple[UserInfo, float]] = {}

    async def authenticate(self, token: str) -> tuple[UserInfo, float]:
        """Verify the token, then find the active user it names."""
        verified = decode_access_token(token, self._secret)
        return await self._find(verified.username), verified.expires_at

    async def authenticate_request(self, token: str) -> tuple[UserInfo, float]:
        """:meth:`authenticate` for HTTP requests: the user may come from the short cache."""
        verified = decode_access_token(token, self._secret)
        name = verified.username
        if self._ttl:
            hit = self._cache.get(name)
            if hit is not None and hit[1] > time.monotonic():
                return hit[0], verified.expires_at
        user = await self._find(name)
        if self._ttl:
            if len(self._cache) >= _USER_CACHE_MAX:
                self._cache.clear()
            self._cache[name] = (user, time.monotonic() + self._ttl)
        return user, verified.expires_at

    async def _find(self, name: str) -> UserInfo:
        user = await self._lookup(name)
        if user is None:
            self._cache.pop(name, None)
            raise AuthError("User not found or inactive")
        if self._ttl and name in self._cache:
            self._cache[name] = (user, time.monotonic() + self._ttl)  # a fresh lookup refreshes the cache
        return user
