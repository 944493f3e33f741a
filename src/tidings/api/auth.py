"""``POST /auth/token``: the OAuth2 password flow, issuing HS256 access tokens."""

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, status
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel

from tidings.auth import create_access_token
from tidings.db import Database
from tidings.settings import Settings

__all__ = ["Token", "build_auth_router"]


class Token(BaseModel):
    """An issued access token."""

    access_token: str
    token_type: str = "bearer"
    expires_in: int


def build_auth_router(db: Database, settings: Settings) -> APIRouter:
    """The token endpoint, bound to a database and settings."""
    router = APIRouter(tags=["auth"])

    @router.post("/auth/token", response_model=Token)
    async def issue_token(form: Annotated[OAuth2PasswordRequestForm, Depends()]) -> Token:
        """Exchange a username and password for an access token (401 on bad credentials)."""
        user = await db.check_password(form.username, form.password)
        if user is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "Incorrect username or password",
                headers={"WWW-Authenticate": "Bearer"},
            )
        token = create_access_token(user.username, settings.resolved_secret_key, settings.token_ttl)
        return Token(access_token=token, expires_in=settings.token_ttl)

    return router
