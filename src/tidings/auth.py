"""Authentication: a host's ``authenticate`` callable, or the built-in HS256 tokens (``sub`` = username).

A host passes ``authenticate(conn: HTTPConnection) -> UserInfo | None`` to :class:`~tidings.Tidings`; it sees
the WebSocket handshake or the REST request (headers, cookies, query, subprotocols). Without one, the built-in
users (:mod:`tidings.users`) issue tokens that :class:`TokenAuthenticator` verifies: signature, expiry, the
user's credential version (``ver``: a password change or deactivation invalidates older tokens) and, for tokens
revoked by ``POST /auth/logout``, their id (``jti``).

Password hashing lives in :mod:`tidings.users.passwords` (the ``[users]`` extra); ``hash_password`` and
``verify_password`` are importable from here too, loaded on first use.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import jwt
from starlette.requests import HTTPConnection

from tidings.connection import UserInfo
from tidings.errors import TidingsError

__all__ = [
    "MAX_USER_CACHE_TTL",
    "AuthError",
    "Authenticate",
    "Authenticator",
    "Credentials",
    "Identity",
    "TokenAuthenticator",
    "VerifiedToken",
    "create_access_token",
    "decode_access_token",
    "token_from_connection",
]

ALGORITHM = "HS256"

#: A host's authentication: the handshake or request in, the user (or None: 1008 / 401) out.
Authenticate = Callable[[HTTPConnection], Awaitable[UserInfo | None]]


def __getattr__(name: str) -> Any:
    if name in ("hash_password", "verify_password"):
        from tidings.users import passwords

        return getattr(passwords, name)
    raise AttributeError(f"module 'tidings.auth' has no attribute {name!r}")


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
    version: int = 0  #: the user's credential version when the token was issued (absent: 0)
    token_id: str | None = None  #: ``jti``, what ``POST /auth/logout`` revokes


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a handshake or request authenticated as."""

    user: UserInfo
    expires_at: float | None = None  #: when the connection must end (token expiry); None: never
    token_id: str | None = None  #: the token's ``jti`` (built-in tokens), to close its sockets on logout


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a user lookup returns when it knows the user's credential version."""

    user: UserInfo
    version: int = 0


def create_access_token(username: str, secret: str, ttl: int = 3600, *, version: int = 0) -> str:
    """Sign a token for ``username`` valid for ``ttl`` seconds, at credential ``version``, with a random ``jti``."""
    now = int(time.time())
    claims: dict[str, Any] = {"sub": username, "iat": now, "exp": now + ttl, "jti": secrets.token_urlsafe(12)}
    if version:
        claims["ver"] = version
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


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
    version = claims.get("ver", 0)
    jti = claims.get("jti")
    if not isinstance(version, int) or isinstance(version, bool) or (jti is not None and not isinstance(jti, str)):
        raise AuthError("Invalid token")
    return VerifiedToken(sub, float(claims["exp"]), version, jti)


def token_from_connection(conn: HTTPConnection) -> str | None:
    """The bearer token of a request or handshake: ``Authorization: Bearer``, the ``bearer, <token>``
    subprotocol pair, or the ``token`` query parameter."""
    auth = conn.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    protocols = [str(p).strip() for p in conn.scope.get("subprotocols") or () if str(p).strip()]
    if len(protocols) >= 2 and protocols[0].lower() == "bearer":
        return protocols[1]
    return conn.query_params.get("token") or None


class Authenticator(Protocol):
    """Turns a bearer token into the user it belongs to."""

    async def authenticate(self, token: str) -> tuple[UserInfo, float]:
        """Return the active user and the token's expiry time, or raise :class:`AuthError`."""


UserLookup = Callable[[str], Awaitable[UserInfo | Credentials | None]]
RevocationCheck = Callable[[str], Awaitable[bool]]
#: ``(username, token_id) -> (credentials or None, revoked)``: a lookup and a revocation check in one query;
#: ``revoked`` may be None when there is no such user (then :data:`RevocationCheck` is asked).
TokenLookup = Callable[[str, str], Awaitable[tuple[Credentials | None, bool | None]]]


#: Tokens whose signature was checked, kept so a client that sends the same token on every request (a publisher in
#: a loop) is not verified from scratch each time; cleared when full.
_VERIFIED_MAX = 4096


class VerifiedTokens:
    """``token -> VerifiedToken`` for tokens that passed :func:`decode_access_token` once.

    A token's signature and claims never change, so only its expiry is checked again on a hit. This skips the
    HMAC and the JSON and base64 decoding, about a tenth of the loop's work per ``POST /api/publish``.
    Revocation and the credential version are still checked on every use (by :class:`TokenAuthenticator`).
    """

    def __init__(self, secret: str, max_entries: int = _VERIFIED_MAX) -> None:
        self._secret = secret
        self._max = max_entries
        self._tokens: dict[str, VerifiedToken] = {}

    def decode(self, token: str) -> VerifiedToken:
        """:func:`decode_access_token`, from the cache when ``token`` was verified before and has not expired."""
        hit = self._tokens.get(token)
        if hit is not None:
            if hit.expires_at <= time.time():  # as PyJWT: expired once exp is reached
                del self._tokens[token]
                raise AuthError("Token expired")
            return hit
        verified = decode_access_token(token, self._secret)
        if len(self._tokens) >= self._max:
            self._tokens.clear()
        self._tokens[token] = verified
        return verified

    def __len__(self) -> int:
        return len(self._tokens)


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

    def __init__(
        self,
        secret: str,
        lookup: UserLookup,
        *,
        cache_ttl: float = 0.0,
        is_revoked: RevocationCheck | None = None,
        token_lookup: TokenLookup | None = None,
    ) -> None:
        self._tokens = VerifiedTokens(secret)
        self._lookup = lookup
        self._is_revoked = is_revoked
        self._token_lookup = token_lookup
        self._ttl = max(0.0, min(cache_ttl, MAX_USER_CACHE_TTL))
        self._cache: dict[str, tuple[Credentials, float]] = {}

    async def authenticate(self, token: str) -> tuple[UserInfo, float]:
        """Verify the token, then find the active user it names."""
        identity = await self.verify(token)
        return identity.user, identity.expires_at or 0.0

    async def verify(self, token: str, *, cached: bool = False) -> Identity:
        """Verify the token (signature, expiry, revocation, credential version) and find its active user.

        With ``cached``, the user may come from the short cache (HTTP requests)."""
        verified = self._tokens.decode(token)
        name = verified.username
        creds: Credentials | None = None
        if cached and self._ttl:
            hit = self._cache.get(name)
            if hit is not None and hit[1] > time.monotonic():
                creds = hit[0]
        fresh = creds is None
        token_id = verified.token_id
        if creds is None and token_id is not None and self._token_lookup is not None:
            found, revoked = await self._token_lookup(name, token_id)  # both questions in one query
            if revoked is None and found is None:
                revoked = await self._revoked(token_id)
            if revoked:
                raise AuthError("Token revoked")
            creds = self._found(name, found)
        else:
            if token_id is not None and await self._revoked(token_id):
                raise AuthError("Token revoked")
            if creds is None:
                creds = self._found(name, await self._lookup(name))
        if fresh and self._ttl and (cached or name in self._cache):  # a fresh lookup refreshes the cache
            if len(self._cache) >= _USER_CACHE_MAX:
                self._cache.clear()
            self._cache[name] = (creds, time.monotonic() + self._ttl)
        if verified.version != creds.version:
            raise AuthError("Credentials changed")
        return Identity(creds.user, verified.expires_at, verified.token_id)

    async def authenticate_request(self, token: str) -> tuple[UserInfo, float]:
        """:meth:`authenticate` for HTTP requests: the user may come from the short cache."""
        identity = await self.verify(token, cached=True)
        return identity.user, identity.expires_at or 0.0

    def forget(self, username: str) -> None:
        """Drop ``username`` from the cache (its credentials or role changed)."""
        self._cache.pop(username, None)

    async def _revoked(self, token_id: str) -> bool:
        return self._is_revoked is not None and await self._is_revoked(token_id)

    def _found(self, name: str, found: UserInfo | Credentials | None) -> Credentials:
        if found is None:
            self._cache.pop(name, None)
            raise AuthError("User not found or inactive")
        return found if isinstance(found, Credentials) else Credentials(found)
