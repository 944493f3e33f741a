"""Tokens and passwords: the token endpoint, and every kind of bad token refused by WebSocket and REST alike."""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import time
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import update

from tests.conftest import LiveServer, _run_in_thread, connected, expect_close, recv_json, ws_connect
from tidings.auth import (
    MAX_USER_CACHE_TTL,
    AuthError,
    Credentials,
    TokenAuthenticator,
    VerifiedTokens,
    create_access_token,
    decode_access_token,
    hash_password,
    verify_password,
)
from tidings.connection import UserInfo
from tidings.db import Database, User

SECRET = "s" * 40

pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")


@functools.cache
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


# ---- unit: tokens and passwords ----------------------------------------------------------------------------


def test_token_claims() -> None:
    before = int(time.time())
    token = create_access_token("ann", SECRET, ttl=600)
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "HS256"
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["sub"] == "ann"
    assert before + 600 <= claims["exp"] <= int(time.time()) + 600
    verified = decode_access_token(token, SECRET)
    assert verified.username == "ann" and verified.expires_at == claims["exp"]


def b64(obj: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def future() -> int:
    return int(time.time()) + 3600


def forged_tokens(secret: str, username: str) -> dict[str, tuple[str, str]]:
    """Tokens that must all be refused, with the reason the server gives: name -> (token, reason)."""
    good = create_access_token(username, secret)
    head, body, sig = good.split(".")
    other_body = b64({"sub": "admin", "exp": future()})
    return {
        "alg none": (
            f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64({'sub': username, 'exp': future()})}.",
            "Invalid token",
        ),
        "alg none (pyjwt)": (jwt.encode({"sub": username, "exp": future()}, "", algorithm="none"), "Invalid token"),
        "HS512, same key": (
            jwt.encode({"sub": username, "exp": future()}, secret, algorithm="HS512"),
            "Invalid token",
        ),
        "RS256": (jwt.encode({"sub": username, "exp": future()}, rsa_key(), algorithm="RS256"), "Invalid token"),
        "another key": (create_access_token(username, "another-key-" + "x" * 30), "Invalid token"),
        "expired": (create_access_token(username, secret, ttl=-5), "Token expired"),
        "no exp": (jwt.encode({"sub": username}, secret, algorithm="HS256"), "Invalid token"),
        "no sub": (jwt.encode({"exp": future()}, secret, algorithm="HS256"), "Invalid token"),
        "empty sub": (jwt.encode({"sub": "", "exp": future()}, secret, algorithm="HS256"), "Invalid token"),
        "numeric sub": (jwt.encode({"sub": 1, "exp": future()}, secret, algorithm="HS256"), "Invalid token"),
        "string exp": (jwt.encode({"sub": username, "exp": "later"}, secret, algorithm="HS256"), "Invalid token"),
        "not yet valid": (
            jwt.encode({"sub": username, "exp": future(), "nbf": future()}, secret, algorithm="HS256"),
            "Invalid token",
        ),
        "signature stripped": (f"{head}.{body}.", "Invalid token"),
        "payload swapped": (f"{head}.{other_body}.{sig}", "Invalid token"),
        "garbage": ("not-a-token", "Invalid token"),
    }


KINDS = [
    "alg none",
    "alg none (pyjwt)",
    "HS512, same key",
    "RS256",
    "another key",
    "expired",
    "no exp",
    "no sub",
    "empty sub",
    "numeric sub",
    "string exp",
    "not yet valid",
    "signature stripped",
    "payload swapped",
    "garbage",
]


def test_every_kind_of_forged_token_is_tested() -> None:
    assert list(forged_tokens(SECRET, "ann")) == KINDS


@pytest.mark.parametrize("name", KINDS)
def test_decode_refuses(name: str) -> None:
    token, reason = forged_tokens(SECRET, "ann")[name]
    with pytest.raises(AuthError) as info:
        decode_access_token(token, SECRET)
    assert info.value.reason == reason


def test_passwords() -> None:
    hashed = hash_password("correct horse")
    assert hashed != "correct horse" and hashed.startswith("$argon2id$")
    assert verify_password("correct horse", hashed)
    assert not verify_password("wrong", hashed)
    assert not verify_password("anything", "not a hash")


async def test_token_authenticator_looks_up_active_users() -> None:
    users = {"ann": UserInfo(1, "ann")}

    async def lookup(name: str) -> UserInfo | None:
        return users.get(name)

    auth = TokenAuthenticator(SECRET, lookup)
    user, expires_at = await auth.authenticate(create_access_token("ann", SECRET, 60))
    assert user == users["ann"] and expires_at > time.time()
    with pytest.raises(AuthError, match="User not found or inactive"):
        await auth.authenticate(create_access_token("zed", SECRET, 60))
    with pytest.raises(AuthError, match="Invalid token"):
        await auth.authenticate(create_access_token("ann", "other" * 10, 60))


async def test_token_authenticator_user_cache_is_short_and_checks_every_token() -> None:
    users = {"ann": UserInfo(1, "ann")}
    calls: list[str] = []

    async def lookup(name: str) -> UserInfo | None:
        calls.append(name)
        return users.get(name)

    auth = TokenAuthenticator(SECRET, lookup, cache_ttl=60)  # clamped to MAX_USER_CACHE_TTL
    assert auth._ttl == MAX_USER_CACHE_TTL <= 2.0
    auth._ttl = 0.2
    token = create_access_token("ann", SECRET, 60)
    await auth.authenticate_request(token)
    await auth.authenticate_request(token)
    assert calls == ["ann"]  # the second request reused the lookup
    with pytest.raises(AuthError, match="Invalid token"):  # signature still checked on a cache hit
        await auth.authenticate_request(create_access_token("ann", "other" * 10, 60))
    with pytest.raises(AuthError, match="Token expired"):  # and expiry
        await auth.authenticate_request(create_access_token("ann", SECRET, -5))
    await auth.authenticate(token)  # connections always look the user up
    assert calls == ["ann", "ann"]
    del users["ann"]  # deactivated
    with pytest.raises(AuthError, match="User not found or inactive"):  # at once for a connection
        await auth.authenticate(token)
    await asyncio.sleep(0.25)
    with pytest.raises(AuthError, match="User not found or inactive"):
        await auth.authenticate_request(token)
    with pytest.raises(AuthError, match="User not found or inactive"):  # misses are not cached
        await auth.authenticate_request(token)
    assert calls == ["ann", "ann", "ann", "ann", "ann"]


async def test_a_verified_token_is_reused_until_it_expires_and_checked_again_after() -> None:
    """The verified-token cache: a token seen before skips the signature check, never the expiry; revocation and
    the credential version are still asked on every use."""
    users = {"ann": Credentials(UserInfo(1, "ann"), 0)}
    revoked: set[str] = set()
    asked: list[str] = []

    async def lookup(name: str) -> Credentials | None:
        return users.get(name)

    async def is_revoked(token_id: str) -> bool:
        asked.append(token_id)
        return token_id in revoked

    auth = TokenAuthenticator(SECRET, lookup, is_revoked=is_revoked)
    token = create_access_token("ann", SECRET, 2)  # exp is whole seconds: valid for at least one more second
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    await auth.authenticate(token)
    await auth.authenticate(token)
    assert len(auth._tokens) == 1 and asked == [claims["jti"]] * 2
    revoked.add(claims["jti"])
    with pytest.raises(AuthError, match="Token revoked"):  # a cached token is still checked for revocation
        await auth.authenticate(token)
    revoked.clear()
    users["ann"] = Credentials(UserInfo(1, "ann"), 1)  # a new password
    with pytest.raises(AuthError, match="Credentials changed"):
        await auth.authenticate(token)
    users["ann"] = Credentials(UserInfo(1, "ann"), 0)
    await asyncio.sleep(max(0.0, claims["exp"] - time.time()) + 0.05)
    with pytest.raises(AuthError, match="Token expired"):  # the cached entry does not outlive its exp
        await auth.authenticate(token)
    with pytest.raises(AuthError, match="Token expired"):  # nor is it re-added
        await auth.authenticate(token)
    assert len(auth._tokens) == 0


async def test_a_token_lookup_answers_user_and_revocation_in_one_call() -> None:
    """With ``token_lookup`` (the built-in users: one query), a token with an id costs one call; the separate
    checks are asked only to tell a revoked token of a missing user from a missing user."""
    users = {"ann": Credentials(UserInfo(1, "ann"), 0)}
    revoked: set[str] = set()
    calls: list[str] = []

    async def lookup(name: str) -> Credentials | None:
        calls.append("lookup")
        return users.get(name)

    async def is_revoked(token_id: str) -> bool:
        calls.append("is_revoked")
        return token_id in revoked

    async def token_lookup(name: str, token_id: str) -> tuple[Credentials | None, bool | None]:
        calls.append("token_lookup")
        found = users.get(name)
        return found, (token_id in revoked) if found is not None else None

    auth = TokenAuthenticator(SECRET, lookup, is_revoked=is_revoked, token_lookup=token_lookup)
    token = create_access_token("ann", SECRET, 60)
    jti = jwt.decode(token, SECRET, algorithms=["HS256"])["jti"]
    assert (await auth.authenticate(token))[0] == users["ann"].user
    assert (await auth.authenticate_request(token))[0] == users["ann"].user
    assert calls == ["token_lookup"] * 2
    revoked.add(jti)
    with pytest.raises(AuthError, match="Token revoked"):
        await auth.authenticate(token)
    users["ann"] = Credentials(UserInfo(1, "ann"), 1)
    revoked.clear()
    with pytest.raises(AuthError, match="Credentials changed"):
        await auth.authenticate(token)
    del users["ann"]
    calls.clear()
    with pytest.raises(AuthError, match="User not found or inactive"):
        await auth.authenticate(token)
    assert calls == ["token_lookup", "is_revoked"]
    revoked.add(jti)
    with pytest.raises(AuthError, match="Token revoked"):  # as without token_lookup: revocation is said first
        await auth.authenticate(token)


async def test_database_token_credentials_reads_the_user_and_the_revocation_together(tmp_path: Any) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'users.db'}")
    await db.migrate()
    try:
        ann = await db.create_user("ann", "pw")
        creds, revoked = await db.token_credentials("ann", "t1")
        assert creds is not None and creds.user.username == "ann" and creds.version == 0 and revoked is False
        await db.revoke_token("t1", ann.id, time.time() + 60)
        assert (await db.token_credentials("ann", "t1"))[1] is True
        assert (await db.token_credentials("ann", "t2"))[1] is False
        await db.update_user(ann.id, is_active=False)
        assert await db.token_credentials("ann", "t1") == (None, True)  # inactive: no user, still said revoked
        assert await db.token_credentials("nobody", "t1") == (None, None)  # no row: revocation not asked
    finally:
        await db.dispose()


def test_the_verified_token_cache_is_bounded() -> None:
    cache = VerifiedTokens(SECRET, max_entries=3)
    tokens = [create_access_token(f"u{i}", SECRET, 60) for i in range(4)]
    for token in tokens:
        assert cache.decode(token).username.startswith("u")
    assert len(cache) == 1  # cleared when full, then the fourth added
    with pytest.raises(AuthError, match="Invalid token"):
        cache.decode(tokens[0][:-2] + ("AA" if not tokens[0].endswith("AA") else "BB"))


# ---- live: the token endpoint and refusals -------------------------------------------------------------------


@pytest.fixture(scope="module")
def srv(module_server_factory: Any) -> LiveServer:
    server: LiveServer = module_server_factory()
    server.create_user("ann", "ann-password")
    server.create_user("zed", "zed-password")
    set_active(server, "zed", False)
    return server


def set_active(server: LiveServer, username: str, active: bool) -> None:
    """Activate or deactivate an account directly in the server's database."""

    async def run() -> None:
        db = Database(server.database_url)
        try:
            async with db.session() as session:
                await session.execute(update(User).where(User.username == username).values(is_active=active))
        finally:
            await db.dispose()

    _run_in_thread(run)


async def post_token(srv: LiveServer, **form: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=srv.url) as http:
        return await http.post("/auth/token", data=form)


async def test_token_endpoint(srv: LiveServer) -> None:
    resp = await post_token(srv, username="ann", password="ann-password")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["token_type"] == "bearer"
    assert {"access_token", "token_type"} <= body.keys()
    claims = jwt.decode(body["access_token"], srv.secret, algorithms=["HS256"])
    assert claims["sub"] == "ann" and claims["exp"] > time.time()
    async with httpx.AsyncClient(base_url=srv.url) as http:
        me = await http.get("/api/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.status_code == 200 and me.json()["username"] == "ann"
    ws = await ws_connect(srv.ws_url(), body["access_token"])
    try:
        assert (await recv_json(ws))["type"] == "connection_established"
    finally:
        await ws.close()


@pytest.mark.parametrize(
    ("username", "password"),
    [
        ("ann", "wrong"),
        ("ann", "ann-password "),
        ("nobody", "ann-password"),
        ("zed", "zed-password"),
        ("ANN", "ann-password"),
    ],
)
async def test_token_endpoint_bad_credentials(srv: LiveServer, username: str, password: str) -> None:
    resp = await post_token(srv, username=username, password=password)
    assert resp.status_code == 401, resp.text
    assert resp.json()["detail"] == "Incorrect username or password"
    assert resp.headers["www-authenticate"] == "Bearer"


async def test_token_endpoint_bad_requests(srv: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=srv.url) as http:
        assert (await http.post("/auth/token", data={"username": "ann"})).status_code == 422
        assert (await http.post("/auth/token", data={"password": "x"})).status_code == 422
        assert (await http.post("/auth/token", data={"username": "ann", "password": ""})).status_code == 422
        resp = await http.post("/auth/token", json={"username": "ann", "password": "ann-password"})
        assert resp.status_code == 422
        assert (await http.get("/auth/token")).status_code == 405


@pytest.mark.parametrize("name", KINDS)
async def test_websocket_refuses_bad_tokens(srv: LiveServer, name: str) -> None:
    token, reason = forged_tokens(srv.secret, "ann")[name]
    ws = await ws_connect(srv.ws_url(), additional_headers={"Authorization": f"Bearer {token}"})
    try:
        assert await expect_close(ws) == (1008, reason)
    finally:
        await ws.close()


@pytest.mark.parametrize("name", KINDS)
async def test_rest_refuses_bad_tokens(srv: LiveServer, name: str) -> None:
    token, reason = forged_tokens(srv.secret, "admin")[name]
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=srv.url) as http:
        me = await http.get("/api/me", headers=headers)
        broadcast = await http.post("/admin/broadcast", json={"message": "forged"}, headers=headers)
    assert me.status_code == 401 and me.json()["detail"] == reason
    assert broadcast.status_code == 401


async def test_inactive_and_unknown_users_are_refused(srv: LiveServer) -> None:
    for username in ("zed", "nobody"):
        ws = await ws_connect(srv.ws_url(), srv.token(username))
        try:
            assert await expect_close(ws) == (1008, "User not found or inactive")
        finally:
            await ws.close()
        async with httpx.AsyncClient(base_url=srv.url) as http:
            resp = await http.get("/api/me", headers={"Authorization": f"Bearer {srv.token(username)}"})
        assert resp.status_code == 401 and resp.json()["detail"] == "User not found or inactive"


async def test_deactivation_takes_effect_on_the_next_connection(srv: LiveServer) -> None:
    srv.create_user("yan", "yan-password")
    token = srv.token("yan")
    async with connected(srv, "yan"):
        pass
    set_active(srv, "yan", False)
    ws = await ws_connect(srv.ws_url(), token)
    try:
        assert await expect_close(ws) == (1008, "User not found or inactive")
    finally:
        await ws.close()
    assert (await post_token(srv, username="yan", password="yan-password")).status_code == 401
    set_active(srv, "yan", True)
    assert (await post_token(srv, username="yan", password="yan-password")).status_code == 200


async def test_connection_closed_when_its_token_expires(srv: LiveServer) -> None:
    ws = await ws_connect(srv.ws_url(), srv.token("ann", ttl=3))
    try:
        assert (await recv_json(ws))["type"] == "connection_established"
        assert await expect_close(ws, timeout=15) == (4003, "Token expired")
    finally:
        await ws.close()
