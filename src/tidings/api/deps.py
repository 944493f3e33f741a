"""Request dependencies: the current user from a bearer token, admins only."""

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, HTTPException, status
from fastapi.security import OAuth2PasswordBearer

from tidings.auth import AuthError
from tidings.connection import UserInfo
from tidings.node import Node

__all__ = ["admin_dependency", "user_dependency"]

_bearer = OAuth2PasswordBearer(tokenUrl="/auth/token", auto_error=False)


def user_dependency(node: Node) -> Callable[[str | None], Awaitable[UserInfo]]:
    """A dependency resolving the bearer token to an active user (401 otherwise)."""

    async def current_user(token: Annotated[str | None, Depends(_bearer)]) -> UserInfo:
        unauthorized = {"WWW-Authenticate": "Bearer"}
        if not token:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "Not authenticated", headers=unauthorized)
        if node.authenticator is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "Authentication is not configured")
        try:
            # the authenticator's request variant where it has one (TokenAuthenticator: a user cache of <= 2 s)
            authenticate = getattr(node.authenticator, "authenticate_request", node.authenticator.authenticate)
            user, _ = await authenticate(token)
        except AuthError as exc:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, exc.reason, headers=unauthorized) from None
        return user

    return current_user


def admin_dependency(node: Node) -> Callable[[UserInfo], Awaitable[UserInfo]]:
    """A dependency that lets administrators through (403 for other users)."""
    current_user = user_dependency(node)

    async def admin_user(user: Annotated[UserInfo, Depends(current_user)]) -> UserInfo:
        if not user.is_admin:
            raise HTTPException(status.HTTP_403_FORBIDDEN, "Administrator role required")
        return user

    return admin_user
