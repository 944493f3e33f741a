"""Access tokens (HS256 JWT, ``sub`` = username, ``exp``) and password hashing."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import jwt
from pwdlib import PasswordHash

from tidings.connection import UserInfo

__all__ = [
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


class AuthError(Exception):
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


class TokenAuthenticator:
    """Verifies Tidings JWTs and looks the user up (active users only) with ``lookup``."""

    def __init__(self, secret: str, lookup: UserLookup) -> None:
        self._secret = secret
        self._lookup = lookup

    async def authenticate(self, token: str) -> tuple[UserInfo, float]:
        """Verify the token, then find the active user it names."""
        verified = decode_access_token(token, self._secret)
        user = await self._lookup(verified.username)
        if user is None:
            raise AuthError("User not found or inactive")
        return user, verified.expires_at
