"""REST API of the built-in users: tokens (``/auth/token``, ``/auth/logout``) and account administration.

* ``POST /auth/token`` -- the OAuth2 password flow. Failed attempts are limited per client IP and per username
  (429 with ``Retry-After``); passwords are verified off the event loop.
* ``POST /auth/logout`` -- revokes the presented token until its expiry and closes the sockets opened with it.
* ``GET /api/admin/users``, ``POST /api/admin/users``, ``PATCH /api/admin/users/{id}``,
  ``DELETE /api/admin/users/{id}`` -- administrators. A password change, deactivation or deletion invalidates
  the user's tokens and closes their sockets (1008); a role change closes them with 4004 (reconnect).
"""

import math
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordBearer, OAuth2PasswordRequestForm
from pydantic import BaseModel, Field
from sqlalchemy import select

from tidings.api.deps import admin_dependency
from tidings.auth import AuthError, create_access_token, decode_access_token
from tidings.connection import UserInfo
from tidings.db import User
from tidings.db.database import DuplicateUser, LastAdmin

if TYPE_CHECKING:
    from tidings.users.service import BuiltinUsers

__all__ = ["Token", "UserIn", "UserList", "UserOut", "UserPatch", "build_users_router"]

_bearer = OAuth2PasswordBearer(tokenUrl="/auth/token", auto_error=False)


class Token(BaseModel):
    """An issued access token."""

    access_token: str
    token_type: str = "bearer"
    expires_in: int


class UserOut(BaseModel):
    """An account."""

    user_id: int
    username: str
    role: Literal["admin", "user"]
    is_active: bool
    created_at: datetime | None


class UserList(BaseModel):
    """Every account, by id."""

    users: list[UserOut]


class UserIn(BaseModel):
    """Body of ``POST /api/admin/users``."""

    username: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")
    password: str = Field(min_length=4, max_length=256)
    role: Literal["admin", "user"] = "user"


class UserPatch(BaseModel):
    """Body of ``PATCH /api/admin/users/{id}``: the fields to change."""

    role: Literal["admin", "user"] | None = None
    is_active: bool | None = None
    password: str | None = Field(None, min_length=4, max_length=256)


def _user_out(user: User) -> UserOut:
    return UserOut(
        user_id=user.id,
        username=user.username,
        role="admin" if user.role == "admin" else "user",
        is_active=user.is_active,
        created_at=user.created_at,
    )


def _too_many(wait: float) -> HTTPException:
    seconds = max(1, math.ceil(wait))
    return HTTPException(
        status.HTTP_429_TOO_MANY_REQUESTS,
        f"Too many failed logins; try again in {seconds} s",
        headers={"Retry-After": str(seconds)},
    )


def build_users_router(users: "BuiltinUsers") -> APIRouter:
    """The token and account routes, bound to one :class:`~tidings.users.service.BuiltinUsers`."""
    router = APIRouter()
    db = users.db
    settings = users.settings
    AdminT = Annotated[UserInfo, Depends(admin_dependency(users.node))]  # noqa: N806

    @router.post("/auth/token", response_model=Token, tags=["auth"])
    async def issue_token(request: Request, form: Annotated[OAuth2PasswordRequestForm, Depends()]) -> Token:
        """Exchange a username and password for an access token (401 on bad credentials, 429 when too many
        attempts failed from this address or for this username)."""
        ip = request.client.host if request.client else "?"
        name = form.username[:128]
        wait = users.limit_ip.hit(ip)
        if wait:
            raise _too_many(wait)
        wait = users.limit_user.hit(name)
        if wait:
            users.limit_ip.forgive(ip)
            raise _too_many(wait)
        user = await db.check_password(form.username, form.password)
        if user is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "Incorrect username or password",
                headers={"WWW-Authenticate": "Bearer"},
            )
        users.limit_ip.forgive(ip)
        users.limit_user.reset(name)
        token = create_access_token(
            user.username, settings.resolved_secret_key, settings.token_ttl, version=user.credential_version or 0
        )
        return Token(access_token=token, expires_in=settings.token_ttl)

    @router.post("/auth/logout", tags=["auth"])
    async def logout(request: Request, token: Annotated[str | None, Depends(_bearer)]) -> dict[str, str]:
        """Revoke the presented token until its expiry and close the WebSockets opened with it (every node)."""
        unauthorized = {"WWW-Authenticate": "Bearer"}
        try:
            user = await users.node.authenticate_request(request, token)
            verified = decode_access_token(token or "", settings.resolved_secret_key)
        except AuthError as exc:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, exc.reason, headers=unauthorized) from None
        if verified.token_id is None:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, "This token has no id and cannot be revoked")
        await db.revoke_token(verified.token_id, int(user.id), verified.expires_at)
        await users.node.disconnect_user(user.id, 1008, "Logged out", token_id=verified.token_id)
        return {"message": "Logged out"}

    @router.get("/api/admin/users", tags=["admin"], response_model=UserList)
    async def list_users(_: AdminT) -> UserList:
        """Every account."""
        async with db.sessions() as session:
            rows = (await session.execute(select(User).order_by(User.id))).scalars()
            return UserList(users=[_user_out(user) for user in rows])

    @router.post("/api/admin/users", tags=["admin"], status_code=status.HTTP_201_CREATED, response_model=UserOut)
    async def create_user(body: UserIn, _: AdminT) -> UserOut:
        """Create an account (409 when the name is taken)."""
        try:
            user = await db.create_user(body.username, body.password, role=body.role)
        except DuplicateUser:
            raise HTTPException(status.HTTP_409_CONFLICT, f"User {body.username!r} already exists") from None
        return _user_out(user)

    @router.patch("/api/admin/users/{user_id}", tags=["admin"], response_model=UserOut)
    async def update_user(user_id: int, body: UserPatch, _: AdminT) -> UserOut:
        """Change an account's role, active flag or password. The last active administrator cannot be demoted
        or deactivated (409). Older tokens stop working after a password change or deactivation, and the
        user's open sockets are closed on every node."""
        try:
            change = await db.update_user(user_id, role=body.role, is_active=body.is_active, password=body.password)
        except LastAdmin:
            raise HTTPException(status.HTTP_409_CONFLICT, "The last active administrator must stay one") from None
        if change is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "User not found")
        await users.apply(change)
        return _user_out(change.user)

    @router.delete("/api/admin/users/{user_id}", tags=["admin"], status_code=status.HTTP_204_NO_CONTENT)
    async def delete_user(user_id: int, _: AdminT) -> None:
        """Delete an account (409 for the last active administrator); its sockets are closed (1008)."""
        try:
            user = await db.delete_user(user_id)
        except LastAdmin:
            raise HTTPException(status.HTTP_409_CONFLICT, "The last active administrator must stay one") from None
        if user is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "User not found")
        await users.revoke(user.id, user.username, 1008, "Account disabled")

    return router
