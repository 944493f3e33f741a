"""Request dependencies: the current user (the host's ``authenticate`` or a bearer token), admins only."""

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordBearer

from tidings.api.ws import origin_allowed
from tidings.auth import AuthError
from tidings.connection import UserInfo
from tidings.node import Node

__all__ = ["admin_dependency", "cookie_token", "user_dependency"]

_bearer = OAuth2PasswordBearer(tokenUrl="/auth/token", auto_error=False)


def cookie_token(request: Request, node: Node) -> str | None:
    """The token from the ``TIDINGS_TOKEN_COOKIE`` cookie, only when the request's ``Origin`` (if any) is allowed:
    a cross-site page's request carrying the browser's cookie is not authenticated by it."""
    name = node.settings.token_cookie
    value = request.cookies.get(name) if name else None
    if not value:
        return None
    headers = {key.lower(): item for key, item in request.headers.items()}
    origin = headers.get("origin")
    if not origin_allowed(origin, headers, node.settings.allowed_origins, request.url.scheme):
        return None
    return value


def user_dependency(node: Node) -> Callable[..., Awaitable[UserInfo]]:
    """A dependency resolving the request to a user (401 otherwise)."""

    async def current_user(request: Request, token: Annotated[str | None, Depends(_bearer)]) -> UserInfo:
        unauthorized = {"WWW-Authenticate": "Bearer"}
        if not token and node.authenticate_hook is None:
            token = cookie_token(request, node)
        try:
            return await node.authenticate_request(request, token)
        except AuthError as exc:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, exc.reason, headers=unauthorized) from None

    return current_user


def admin_dependency(node: Node) -> Callable[[UserInfo], Awaitable[UserInfo]]:
    """A dependency that lets administrators through (403 for other users)."""
    current_user = user_dependency(node)

    async def admin_user(user: Annotated[UserInfo, Depends(current_user)]) -> UserInfo:
        if not node.is_admin(user):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "Administrator role required")
        return user

    return admin_user
