"""Broker URLs: which Redis deployment a node or a publisher talks to, and the redis-py clients for it.

* ``redis://[user:password@]host:port/db`` (also ``rediss://``, ``unix://``): one Redis server.
* ``redis+sentinel://[user:password@]host:port[,host:port...]/service_name[/db]``: the master of ``service_name``
  as the Sentinels report it (re-discovered after a failover). ``rediss+sentinel://`` for TLS to the master;
  ``?sentinel_password=...`` if the Sentinels need one of their own.
* ``redis+cluster://[user:password@]host:port[,host:port...]``: Redis Cluster; the listed nodes are startup
  nodes, the rest is discovered (and re-discovered on ``MOVED`` or a failover). ``rediss+cluster://`` for TLS.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qs, quote, unquote

__all__ = ["BrokerURL", "celery_broker", "is_redis_url", "parse_broker_url", "redact_url"]

Mode = Literal["redis", "sentinel", "cluster"]

_SCHEMES: dict[str, tuple[Mode, bool]] = {
    "redis": ("redis", False),
    "rediss": ("redis", True),
    "unix": ("redis", False),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
}


def is_redis_url(url: str) -> bool:
    """True for every URL :func:`parse_broker_url` accepts (one Redis, Sentinel or Cluster)."""
    return url.split("://", 1)[0].lower() in _SCHEMES and "://" in url


def redact_url(url: str) -> str:
    """``url`` without its password, for logs and ``/healthz`` (works for multi-host URLs too)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, tail = rest.partition("/")
    if "@" not in netloc:
        return url
    creds, host = netloc.rsplit("@", 1)
    user = creds.split(":", 1)[0] if ":" in creds else ""
    if ":" not in creds:
        return url
    return f"{scheme}://{user}:***@{host}{slash}{tail}"


@dataclass(frozen=True, slots=True)
class BrokerURL:
    """A parsed broker URL."""

    url: str
    mode: Mode
    tls: bool = False
    hosts: tuple[tuple[str, int], ...] = ()
    service: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def sharded(self) -> bool:
        """True on Redis Cluster: publications use ``SPUBLISH`` / ``SSUBSCRIBE``."""
        return self.mode == "cluster"

    @property
    def publish_command(self) -> str:
        """``SPUBLISH`` on Redis Cluster, ``PUBLISH`` otherwise."""
        return "SPUBLISH" if self.sharded else "PUBLISH"

    def async_client(self, **options: Any) -> Any:
        """A ``redis.asyncio`` client: ``Redis`` (one server or Sentinel's master) or ``RedisCluster``."""
        import redis.asyncio as aioredis  # here, not at import: the hub core parses URLs without redis installed
        from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
        from redis.asyncio.sentinel import Sentinel as AsyncSentinel

        if self.mode == "redis":
            return aioredis.Redis.from_url(self.url, protocol=2, **options)
        common = self._common(options)
        if self.mode == "sentinel":
            sentinel = AsyncSentinel(  # type: ignore[no-untyped-call]
                list(self.hosts),
                sentinel_kwargs=self._sentinel_kwargs(options),
                socket_timeout=options.get("socket_timeout"),
            )
            return sentinel.master_for(self.service, redis_class=aioredis.Redis, db=self.db, **common)
        nodes = [AsyncClusterNode(host, port) for host, port in self.hosts]
        return aioredis.RedisCluster(startup_nodes=nodes, **common)

    def sync_client(self, **options: Any) -> Any:
        """A blocking client: ``redis.Redis`` (one server or Sentinel's master) or ``redis.RedisCluster``."""
        import redis
        from redis.cluster import ClusterNode
        from redis.sentinel import Sentinel

        if self.mode == "redis":
            return redis.Redis.from_url(self.url, protocol=2, **options)
        common = self._common(options)
        if self.mode == "sentinel":
            sentinel = Sentinel(  # type: ignore[no-untyped-call]
                list(self.hosts),
                sentinel_kwargs=self._sentinel_kwargs(options),
                socket_timeout=options.get("socket_timeout"),
            )
            return sentinel.master_for(self.service, redis_class=redis.Redis, db=self.db, **common)  # type: ignore[no-untyped-call]
        nodes = [ClusterNode(host, port) for host, port in self.hosts]  # type: ignore[no-untyped-call]
        return redis.RedisCluster(startup_nodes=nodes, **common)

    def _common(self, options: dict[str, Any]) -> dict[str, Any]:
        common: dict[str, Any] = {"protocol": 2, **options}
        if self.username:
            common["username"] = self.username
        if self.password:
            common["password"] = self.password
        if self.tls:
            common["ssl"] = True
        if self.mode == "cluster":
            common.pop("retry", None)
            common.pop("health_check_interval", None)
        return common

    def _sentinel_kwargs(self, options: dict[str, Any]) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"socket_connect_timeout": options.get("socket_connect_timeout", 2.0)}
        if self.sentinel_password:
            kwargs["password"] = self.sentinel_password
        return kwargs


def _hosts(netloc: str, url: str) -> tuple[tuple[str, int], ...]:
    hosts = []
    for item in netloc.split(","):
        item = item.strip()
        if not item:
            continue
        host, sep, port = item.rpartition(":") if not item.endswith("]") else (item, "", "")
        if not sep:
            host, port = item, ""
        host = host.strip("[]")
        if not host:
            raise ValueError(f"Bad host in broker URL {redact_url(url)!r}")
        try:
            number = int(port) if port else 0
        except ValueError:
            raise ValueError(f"Bad port {port!r} in broker URL {redact_url(url)!r}") from None
        hosts.append((host, number))
    if not hosts:
        raise ValueError(f"No host in broker URL {redact_url(url)!r}")
    return tuple(hosts)


def parse_broker_url(url: str) -> BrokerURL:
    """Parse a Redis broker URL (see the module docstring); :class:`ValueError` with a clear message if bad."""
    scheme, sep, rest = url.partition("://")
    key = scheme.lower()
    if not sep or key not in _SCHEMES:
        raise ValueError(
            f"Unsupported broker URL {redact_url(url)!r}: expected redis://, rediss://, unix://, "
            "redis+sentinel://host:port[,host:port]/service or redis+cluster://host:port[,host:port]"
        )
    mode, tls = _SCHEMES[key]
    if mode == "redis":
        return BrokerURL(url, mode, tls)
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    username = password = None
    if "@" in netloc:
        creds, netloc = netloc.rsplit("@", 1)
        user, has_pw, pw = creds.partition(":")
        username = unquote(user) or None
        password = unquote(pw) if has_pw else None
    params = {k: v[-1] for k, v in parse_qs(query).items()}
    default_port = 26379 if mode == "sentinel" else 6379
    hosts = tuple((h, p or default_port) for h, p in _hosts(netloc, url))
    if mode == "cluster":
        if path.strip("/") not in ("", "0"):
            raise ValueError(f"Redis Cluster has only database 0: {redact_url(url)!r}")
        return BrokerURL(url, mode, tls, hosts, username=username, password=password, extra=params)
    parts = [p for p in path.split("/") if p]
    if not parts:
        raise ValueError(
            "A Sentinel broker URL names its service (redis+sentinel://host:port/service_name), "
            f"not {redact_url(url)!r}"
        )
    db = 0
    if len(parts) > 1:
        try:
            db = int(parts[1])
        except ValueError:
            raise ValueError(f"Bad database number in {redact_url(url)!r}") from None
    return BrokerURL(
        url,
        mode,
        tls,
        hosts,
        service=unquote(parts[0]),
        db=db,
        username=username,
        password=password,
        sentinel_password=params.pop("sentinel_password", None),
        extra=params,
    )


def celery_broker(url: str) -> tuple[str, dict[str, Any]] | None:
    """Celery's (kombu's) broker URL and transport options for the Tidings broker ``url``, or None.

    One Redis: the URL itself. Sentinel: kombu's ``sentinel://host:port;sentinel://...`` with ``master_name``.
    Redis Cluster: None, kombu has no Redis Cluster transport (set ``TIDINGS_CELERY_BROKER_URL`` to a plain Redis).
    """
    target = parse_broker_url(url)
    if target.mode == "redis":
        return url, {}
    if target.mode == "cluster":
        return None
    creds = ""
    if target.password is not None:
        creds = f"{quote(target.username or '', safe='')}:{quote(target.password, safe='')}@"
    scheme = "sentinel"
    hosts = ";".join(f"{scheme}://{creds}{host}:{port}/{target.db}" for host, port in target.hosts)
    options: dict[str, Any] = {"master_name": target.service}
    if target.sentinel_password:
        options["sentinel_kwargs"] = {"password": target.sentinel_password}
    return hosts, options
