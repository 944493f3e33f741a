"""The ``tidings`` command: serve, manage users, issue tokens."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tidings.settings import Settings

__all__ = ["build_parser", "main", "server_urls"]

#: Where the server is when neither ``--url`` nor ``TIDINGS_URL`` says otherwise.
DEFAULT_URL = "http://127.0.0.1:8000"
WS_PATH = "/ws/authenticated"

PASSWORD_ARG_HELP = (
    "the password on the command line, for scripts: visible to other local users (ps, /proc) and kept in your "
    "shell history; prefer the prompt or --password-stdin"
)


class CommandError(Exception):
    """A usage problem reported as ``error: ...`` with exit status 1 (no traceback)."""


def server_urls(url: str) -> tuple[str, str]:
    """The server's HTTP base URL and WebSocket URL from one ``--url`` / ``TIDINGS_URL`` value.

    ``http://host:8080`` gives ``http://host:8080`` and ``ws://host:8080/ws/authenticated``; a ``ws://`` or
    ``wss://`` URL is taken as the WebSocket URL (``/ws/authenticated`` when it has no path) and gives the
    matching ``http(s)://`` base.
    """
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.netloc:
        raise CommandError(f"--url must be http(s)://host:port or ws(s)://host:port/..., not {url!r}")
    secure = parts.scheme in ("https", "wss")
    http = urlunsplit(("https" if secure else "http", parts.netloc, "", "", ""))
    if parts.scheme in ("ws", "wss") and parts.path not in ("", "/"):
        ws = urlunsplit((parts.scheme, parts.netloc, parts.path, parts.query, ""))
    else:
        ws = urlunsplit(("wss" if secure else "ws", parts.netloc, WS_PATH, "", ""))
    return http, ws


def read_password(args: argparse.Namespace, *, confirm: bool = True) -> str:
    """The password from ``--password-stdin`` (first line of stdin), ``--password``, or a hidden prompt."""
    if args.password_stdin:
        line = sys.stdin.readline()
        password = line[:-1] if line.endswith("\n") else line
        password = password[:-1] if password.endswith("\r") else password
        if not password:
            raise CommandError("--password-stdin: stdin held no password")
        return password
    if args.password is not None:
        if not args.password:
            raise CommandError("--password is empty")
        return str(args.password)
    if not sys.stdin.isatty():
        raise CommandError("no password given: use --password-stdin to read it from a pipe, or run in a terminal")
    password = getpass.getpass(f"Password for {args.name}: ")
    if not password:
        raise CommandError("empty password")
    if confirm and getpass.getpass("Repeat the password: ") != password:
        raise CommandError("the passwords do not match")
    return password


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from tidings.app import create_app
    from tidings.server import serve

    serve(create_app(settings), settings, host=args.host, port=args.port)
    return 0


def _users_create(args: argparse.Namespace, settings: Settings) -> int:
    from tidings.db import Database
    from tidings.db.database import DuplicateUser

    password = read_password(args)

    async def run() -> int:
        db = Database(settings.resolved_database_url)
        try:
            await db.migrate()
            user = await db.create_user(args.name, password, role=args.role)
        except DuplicateUser:
            print(f"error: user {args.name!r} already exists", file=sys.stderr)
            return 1
        finally:
            await db.dispose()
        print(user.id)
        return 0

    return asyncio.run(run())


def _users_passwd(args: argparse.Namespace, settings: Settings) -> int:
    from tidings.db import Database

    password = read_password(args)

    async def run() -> int:
        db = Database(settings.resolved_database_url)
        try:
            await db.migrate()
            changed = await db.set_password(args.name, password)
        finally:
            await db.dispose()
        if changed is None:
            print(f"error: no user {args.name!r}", file=sys.stderr)
            return 1
        _revoke_sockets(settings, changed.id, "Credentials changed")
        return 0

    return asyncio.run(run())


def _revoke_sockets(settings: Settings, user_id: int, reason: str) -> None:
    """Close the user's open sockets on every node (Redis broker); with the memory broker the running server
    cannot be reached from here, and its account re-check closes them (``TIDINGS_ACCOUNT_CHECK_INTERVAL``)."""
    if not settings.broker_url.startswith(("redis://", "rediss://", "redis+")):
        interval = settings.account_check_interval
        if interval > 0:
            print(f"note: a running server closes this user's open WebSockets within {interval:g} s", file=sys.stderr)
        else:
            note = "note: open WebSockets of this user close when they reconnect (account re-check off)"
            print(note, file=sys.stderr)
        return
    from tidings.publisher import SyncPublisher

    try:
        with SyncPublisher.from_settings(settings) as publisher:
            publisher.disconnect_user(user_id, 1008, reason)
    except Exception as exc:
        print(f"warning: could not reach the broker to close open sockets: {exc}", file=sys.stderr)


def _users_list(args: argparse.Namespace, settings: Settings) -> int:
    import json

    from sqlalchemy import select

    from tidings.db import Database, User

    async def run() -> list[dict[str, object]]:
        db = Database(settings.resolved_database_url)
        try:
            await db.migrate()
            async with db.sessions() as session:
                users = (await session.execute(select(User).order_by(User.id))).scalars().all()
                return [
                    {
                        "user_id": user.id,
                        "username": user.username,
                        "role": user.role,
                        "is_active": user.is_active,
                        "created_at": user.created_at.isoformat() if user.created_at else None,
                    }
                    for user in users
                ]
        finally:
            await db.dispose()

    rows = asyncio.run(run())
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f"{'ID':>4}  {'USERNAME':<24} {'ROLE':<6} {'ACTIVE':<6} CREATED")
    for row in rows:
        created = str(row["created_at"] or "")[:19].replace("T", " ")
        active = "yes" if row["is_active"] else "no"
        print(f"{row['user_id']:>4}  {row['username']!s:<24} {row['role']!s:<6} {active:<6} {created}")
    return 0


def _token(args: argparse.Namespace, settings: Settings) -> int:
    from tidings.auth import create_access_token
    from tidings.db import Database

    async def run() -> int:
        db = Database(settings.resolved_database_url)
        try:
            await db.migrate()
            creds = await db.credentials(args.name)
        finally:
            await db.dispose()
        if creds is None:
            print(f"error: no active user {args.name!r}", file=sys.stderr)
            return 1
        ttl = args.ttl or settings.token_ttl
        print(create_access_token(creds.user.username, settings.resolved_secret_key, ttl, version=creds.version))
        return 0

    return asyncio.run(run())


def _local_token(settings: Settings, name: str) -> str | None:
    """Sign a token for the active user ``name`` with this installation's key (None if there is no such user)."""
    from tidings.auth import create_access_token
    from tidings.db import Database

    async def run() -> str | None:
        db = Database(settings.resolved_database_url)
        try:
            await db.migrate()
            creds = await db.credentials(name)
        finally:
            await db.dispose()
        if creds is None:
            return None
        return create_access_token(creds.user.username, settings.resolved_secret_key, 3600, version=creds.version)

    return asyncio.run(run())


#: Seconds an interrupted command gets to close its connection and end its tasks before it exits anyway.
EXIT_GRACE = 5.0


def _run_interruptible(main: Coroutine[Any, Any, int], grace: float = EXIT_GRACE) -> int:
    """Run ``main`` until it returns, or until SIGINT / SIGTERM cancels it (exit status 0).

    Bounded, unlike ``asyncio.run``, whose clean-up waits for every task without a limit: after a signal, the
    main task gets ``grace`` seconds to finish its own clean-up, then tasks still left get ``grace`` more, and the
    process exits whatever is still pending.
    """
    loop = asyncio.new_event_loop()
    task = loop.create_task(main)

    def interrupted() -> None:
        task.cancel()
        loop.call_later(grace, loop.stop)  # a clean-up that does not end in time is abandoned

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, interrupted)
    try:
        return loop.run_until_complete(task)
    except asyncio.CancelledError:
        return 0
    except RuntimeError:
        if task.done():  # the command's own error
            raise
        return 0  # stopped: the clean-up did not end in time
    finally:
        left = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for t in left:
            t.cancel()
        if left:
            loop.run_until_complete(asyncio.wait(left, timeout=grace))
        loop.close()


def _listen(args: argparse.Namespace, settings: Settings) -> int:
    from tidings.client import listen

    _, ws_url = server_urls(args.url)
    token = args.token or _local_token(settings, args.user)
    if not token:
        print(f"error: no active user {args.user!r}", file=sys.stderr)
        return 1
    return _run_interruptible(listen(ws_url, token, args.channels))


def _publish(args: argparse.Namespace, settings: Settings) -> int:
    import json

    import httpx

    from tidings.client import publish_rest

    try:
        data = json.loads(args.data)
    except ValueError as exc:
        print(f"error: DATA is not JSON: {exc}", file=sys.stderr)
        return 1
    if args.broker:
        return _publish_to_broker(args.channel, data, settings, args.idempotency_key)
    http_url, _ = server_urls(args.url)
    token = args.token or _local_token(settings, args.user or settings.admin_username)
    if not token:
        print("error: no active administrator to sign a token for (use --user or --token)", file=sys.stderr)
        return 1
    try:
        reply = publish_rest(http_url, token, args.channel, data, idempotency_key=args.idempotency_key)
    except httpx.HTTPStatusError as exc:
        print(f"error: {exc.response.status_code} {exc.response.text}", file=sys.stderr)
        return 1
    except httpx.HTTPError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(reply))
    return 0


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    from tidings.crawler.config import PlatformSettings
    from tidings.crawler.tasks import run_worker

    platform = PlatformSettings()
    if platform.celery_url(settings) is None:
        print(
            "error: 'tidings worker' needs TIDINGS_BROKER_URL=redis://... (or TIDINGS_CELERY_BROKER_URL)",
            file=sys.stderr,
        )
        return 2
    run_worker(
        settings, platform, queue=args.queue, pool=args.pool, concurrency=args.concurrency, loglevel=settings.log_level
    )
    return 0


def _publish_to_broker(channel: str, data: object, settings: Settings, idempotency_key: str | None = None) -> int:
    """Publish straight into the Redis broker (``TIDINGS_BROKER_URL``), as Celery workers do."""
    import json

    from tidings.broker import BrokerUnavailable
    from tidings.crawler.channels import platform_rules
    from tidings.publisher import SyncPublisher

    if platform_rules().policy(channel) is None:
        print(f"error: invalid channel {channel!r}", file=sys.stderr)
        return 1
    try:
        with SyncPublisher.from_settings(settings) as publisher:
            reply = publisher.publish(channel, data, idempotency_key=idempotency_key)
    except (ValueError, BrokerUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(reply))
    return 0


def _url_argument(parser: argparse.ArgumentParser) -> None:
    default = os.environ.get("TIDINGS_URL") or DEFAULT_URL
    parser.add_argument(
        "--url",
        default=default,
        help=f"the server, http(s)://host:port (WebSocket: ws(s)://host:port{WS_PATH} derived from it); "
        f"default TIDINGS_URL, else {DEFAULT_URL} (now: {default})",
    )


def _password_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    group.add_argument("--password", help=PASSWORD_ARG_HELP)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``tidings`` command."""
    parser = argparse.ArgumentParser(
        prog="tidings",
        description="Tidings: a real-time messaging hub for FastAPI.",
        epilog="listen and publish find the server with --url, default TIDINGS_URL (else http://127.0.0.1:8000).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="serve the application")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1; 0.0.0.0: all)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    p.set_defaults(func=_serve)

    p = sub.add_parser("worker", help="run a Celery worker for crawl jobs (needs TIDINGS_BROKER_URL=redis://...)")
    p.add_argument(
        "--queue", default="", help="queue to consume (default TIDINGS_JOB_QUEUE, else <TIDINGS_BROKER_PREFIX>.jobs)"
    )
    p.add_argument("--pool", default="solo", choices=("solo", "threads", "prefork"), help="Celery pool (default solo)")
    p.add_argument("--concurrency", type=int, default=1, help="jobs at a time (default 1; with --pool threads)")
    p.set_defaults(func=_worker)

    users = sub.add_parser("users", help="manage accounts").add_subparsers(dest="users_command", required=True)
    p = users.add_parser(
        "create", help="create an account and print its numeric id (password: hidden prompt or --password-stdin)"
    )
    p.add_argument("name")
    _password_arguments(p)
    p.add_argument("--role", choices=("admin", "user"), default="user")
    p.set_defaults(func=_users_create)
    p = users.add_parser("passwd", help="set an account's password (hidden prompt or --password-stdin)")
    p.add_argument("name")
    _password_arguments(p)
    p.set_defaults(func=_users_passwd)
    p = users.add_parser("list", help="list the accounts: id, name, role, active, created")
    p.add_argument("--json", action="store_true", help="one JSON array instead of a table")
    p.set_defaults(func=_users_list)

    p = sub.add_parser("token", help="print a signed access token for a user")
    p.add_argument("name")
    p.add_argument("--ttl", type=int, default=0, help="lifetime in seconds (default TIDINGS_TOKEN_TTL)")
    p.set_defaults(func=_token)

    p = sub.add_parser("listen", help="subscribe to channels and print their events as JSON lines")
    p.add_argument("channels", metavar="CHANNEL", nargs="+")
    _url_argument(p)
    who = p.add_mutually_exclusive_group()
    who.add_argument("--user", default="admin", help="sign a token locally for this user (default admin)")
    who.add_argument("--token", help="an access token")
    p.set_defaults(func=_listen)

    p = sub.add_parser("publish", help="publish JSON data on a channel (POST /api/publish, admin token)")
    p.add_argument("channel", metavar="CHANNEL")
    p.add_argument("data", metavar="JSON")
    _url_argument(p)
    who = p.add_mutually_exclusive_group()
    who.add_argument("--user", help="administrator to sign a token for locally (default TIDINGS_ADMIN_USERNAME)")
    who.add_argument("--token", help="an administrator's access token")
    who.add_argument(
        "--broker", action="store_true", help="publish directly into the Redis broker (TIDINGS_BROKER_URL), no server"
    )
    p.add_argument(
        "--idempotency-key",
        metavar="KEY",
        help="a repeat of KEY on the channel within TIDINGS_IDEMPOTENCY_TTL publishes nothing (safe retries)",
    )
    p.set_defaults(func=_publish)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tidings`` command."""
    args = build_parser().parse_args(argv)
    settings = Settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # httpx logs every request at INFO ("HTTP Request: POST ... 200 OK"): noise on a command's output
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    func: Callable[[argparse.Namespace, Settings], int] = args.func
    try:
        return func(args, settings)
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
