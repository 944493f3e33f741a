"""Settings: every limit is a ``TIDINGS_*`` environment variable with a documented default."""

from __future__ import annotations

import secrets
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from tidings.files import ensure_private_file

__all__ = ["Settings"]


class Settings(BaseSettings):
    """Configuration of a Tidings node, read from ``TIDINGS_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="TIDINGS_", extra="ignore")

    data_dir: Path = Field(Path("var"), description="Where the SQLite file and the generated secret key live.")
    secret_key: str = Field("", description="HS256 token key; if unset, random and kept in data_dir.")
    token_ttl: int = Field(3600 * 12, ge=60, description="Access token lifetime in seconds.")
    database_url: str = Field("", description="SQLAlchemy async URL; default SQLite under data_dir.")
    broker_url: str = Field(
        "memory://",
        description="memory:// (one process), redis://host:port/db, redis+sentinel://host:port[,...]/service "
        "or redis+cluster://host:port[,...].",
    )
    broker_prefix: str = Field("tidings", description="Key prefix of everything the Redis broker stores.")
    allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Origins allowed to open WebSockets (comma-separated; '*' for any). Empty: same origin only.",
    )
    token_cookie: str = Field(
        "tidings_token",
        description="Cookie the built-in authenticator also reads the token from (after subprotocol, header and "
        "query); only honoured with an allowed Origin. Empty: no cookie auth.",
    )
    max_connections_per_user: int = Field(5, ge=1, description="Concurrent WebSocket connections per user.")
    max_message_bytes: int = Field(65536, ge=128, description="Largest inbound WebSocket message; larger closes 1009.")
    idle_timeout: float = Field(300.0, gt=0, description="Seconds without inbound messages before a close (4001).")
    ping_interval: float = Field(
        30.0,
        ge=0,
        le=3600,
        description="Seconds after which a socket that sent nothing (no message, no pong) gets a WebSocket ping "
        "(0: no pings). Tidings' clients send a heartbeat every 25 s, so they are not pinged.",
    )
    ping_timeout: float = Field(
        20.0, gt=0, le=3600, description="Seconds a ping waits for its pong (or any frame) before a close (1011)."
    )
    send_queue_max: int = Field(1024, ge=1, description="Outbound frames queued per connection before 4000.")
    rate_limit_per_second: float = Field(50.0, gt=0, description="Inbound messages per second per connection.")
    rate_limit_burst: int = Field(100, ge=1, description="Inbound message burst per connection.")
    max_subscriptions: int = Field(100, ge=1, description="Channels one connection may subscribe to.")
    history_size: int = Field(1000, ge=0, description="Publications kept per channel for recovery.")
    history_ttl: int = Field(24 * 3600, ge=1, description="Seconds a channel's history is kept after its last publish.")
    presence_ttl: int = Field(
        30, ge=3, description="Seconds presence keys live in Redis without a node refreshing them."
    )
    node_lease_ttl: float = Field(
        6.0, ge=1.0, le=60.0, description="Seconds after which a silent node is dead and its connections released."
    )
    presence_events_max_members: int = Field(
        1000, ge=0, description="Rooms with more members publish no join/leave events (0: never publish them)."
    )
    history_max_bytes: int = Field(
        1 << 20, ge=1024, description="Bytes of publications kept per channel for recovery (memory and Redis)."
    )
    history_budget_bytes: int = Field(
        32 << 20,
        ge=1 << 16,
        description="Memory broker: bytes of history per node; the least recently used channel's history goes first.",
    )
    max_channels: int = Field(
        10_000, ge=16, description="Memory broker: channels with state per node; idle ones beyond are forgotten."
    )
    room_creators: Literal["user", "admin"] = Field(
        "user", description="Who may create a chat room (a client-publishable channel) by using it: user or admin."
    )
    max_rooms: int = Field(
        1000, ge=1, description="Chat rooms per node; at the cap the least recently used idle room is forgotten."
    )
    room_create_per_minute: int = Field(30, ge=1, description="New chat rooms one user may create per minute.")
    publish_bytes_per_second: int = Field(
        128 << 10, ge=1024, description="Bytes per second one user may publish over WebSockets (per node)."
    )
    publish_burst_bytes: int = Field(1 << 20, ge=1024, description="Publish byte burst of one user (per node).")
    per_message_deflate: bool = Field(False, description="Negotiate permessage-deflate compression.")
    fast_transport: bool = Field(True, description="Use Tidings' own uvicorn WebSocket protocol for fan-out.")
    write_delay: float = Field(
        0.002,
        ge=0,
        le=1,
        description="Fast transport: while the node is busy (a coalesced write ended less than this ago), hold "
        "fan-out frames up to this many seconds so each socket gets them in fewer writes; an idle node never waits "
        "(0: only the frames of one loop pass share a write).",
    )
    write_window_max: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Fast transport: while the node is busy, fan-out frames also wait as long as the last coalesced "
        "write took, up to this many seconds, so a saturated node spends at most about half its time writing "
        "(0: TIDINGS_WRITE_DELAY only).",
    )
    job_progress_every: int = Field(10, ge=1, description="Emit job_progress every this many items.")
    admin_username: str = Field("admin", description="Account created on first start with an empty database.")
    password_hash_workers: int = Field(2, ge=1, description="Threads hashing/verifying passwords (off the loop).")
    login_max_failures_per_ip: int = Field(
        20, ge=1, description="Failed logins per client IP in the window before 429 (Retry-After)."
    )
    login_max_failures_per_user: int = Field(
        10, ge=1, description="Failed logins per username in the window before 429 (Retry-After)."
    )
    account_check_interval: float = Field(
        1.0,
        ge=0,
        description="Built-in users: seconds between re-checks of the accounts behind open connections, so a change "
        "made outside this node (the CLI with the memory broker, SQL) closes their sockets (0: off).",
    )
    login_failure_window: float = Field(60.0, gt=0, description="Seconds over which failed logins are counted.")
    log_level: str = Field("info", description="Log level of the tidings command.")
    durable_channels: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["room"],
        description="Namespaces whose publications are also stored in the database (comma-separated; empty: none).",
    )
    durable_history_size: int = Field(1000, ge=1, description="Messages the database keeps per durable channel.")
    stats_interval: float = Field(2.0, ge=0.2, description="Seconds between a node's stats_update events.")
    max_body_bytes: int = Field(1 << 20, ge=1024, description="Largest HTTP request body; larger gets 413.")
    handshake_timeout: float = Field(
        10.0, gt=0, description="Seconds a connection may take to send its HTTP request or WebSocket upgrade."
    )
    max_connections: int = Field(10000, ge=1, description="Open TCP connections per node (tidings serve).")
    max_connections_per_ip: int = Field(256, ge=1, description="Open connections per client IP (tidings serve).")
    forwarded_allow_ips: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["127.0.0.1", "::1"],
        description="Proxies whose X-Forwarded-For is believed (comma-separated IPs or networks; '*' for any).",
    )

    idempotency_ttl: int = Field(
        300, ge=1, description="Seconds a publish's idempotency key is remembered (a repeat returns the original)."
    )
    idempotency_max_keys: int = Field(
        100_000, ge=1, description="Idempotency keys the memory broker remembers (oldest forgotten first)."
    )

    @field_validator("forwarded_allow_ips", mode="before")
    @classmethod
    def _split_ips(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip().rstrip("/") for item in value.split(",") if item.strip()]
        return value

    @field_validator("durable_channels", mode="before")
    @classmethod
    def _split_namespaces(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @cached_property
    def resolved_database_url(self) -> str:
        """The database URL in use: ``database_url`` or an SQLite file under ``data_dir``."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'tidings.db').resolve()}"

    @cached_property
    def resolved_secret_key(self) -> str:
        """The token key: ``secret_key`` or a random one persisted in ``data_dir/secret_key``."""
        if self.secret_key:
            return self.secret_key
        path = self.data_dir / "secret_key"
        if path.exists():
            return path.read_text().strip()
        key = secrets.token_urlsafe(48)
        ensure_private_file(path)
        path.write_text(key)
        return key
