"""Where crawls may go: the egress policy of crawl jobs (server-side request forgery protection).

A crawl job fetches URLs chosen by a user, then whatever those pages link or redirect to. Without a policy that
turns the crawler into a proxy into the server's network: cloud metadata (``169.254.169.254``), Redis on
``localhost:6379``, admin panels on ``10.x``. :class:`EgressPolicy` refuses

* schemes other than ``http`` and ``https``, and URLs with userinfo (``user:pw@host``);
* non-canonical numeric hosts (``2130706433``, ``0x7f000001``, ``0177.0.0.1``, ``127.1``): any host whose last
  label is a number but that is not a dotted-quad or bracketed IPv6 literal;
* loopback, RFC 1918 private, CGNAT (``100.64.0.0/10``), link-local, unique-local (``fc00::/7``), multicast,
  unspecified and other non-public addresses, including IPv4 addresses embedded in IPv6 ones;
* cloud metadata names and addresses (``metadata.google.internal``, ``169.254.169.254``, ``fd00:ec2::254``...),
  ``localhost`` and names under ``.localhost``, ``.local``, ``.internal``, ``.localdomain``, ``.home.arpa``.

It is applied three times: at job creation (:meth:`EgressPolicy.check_url`, plus the name's current addresses),
on every request the crawl process makes, redirects included (a Scrapy downloader middleware,
:mod:`tidings.crawler.egress_scrapy`), and on the address a host name resolves to when the crawler connects (a
Scrapy DNS resolver), so a name that resolves elsewhere after the check (DNS rebinding) is still refused.

Exceptions: ``TIDINGS_CRAWL_ALLOWED_HOSTS`` (``host``, ``host:port``, ``*.suffix``; IP literals in brackets for
IPv6) and the server's own sample site (:class:`SelfOrigin`: this server's port on a loopback address, paths under
``/sample-site/`` only), so ``make run`` can crawl it with the default settings.

This module imports neither Scrapy nor the web framework; the parent and the crawl process both use it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = [
    "LOOPBACK_NAMES",
    "POLICY_SETTING",
    "SAMPLE_SITE_PREFIX",
    "EgressPolicy",
    "SelfOrigin",
    "address_reason",
    "check_target",
    "host_reason",
]

POLICY_SETTING = "TIDINGS_EGRESS_POLICY"
"""The Scrapy setting that carries the policy into the crawl process (:meth:`EgressPolicy.to_setting`)."""

ALLOWED_SCHEMES = frozenset({"http", "https"})
METADATA_NAMES = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "metadata.azure.com",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.tencentyun.com",
        "metadata.packet.net",
    }
)
INTERNAL_SUFFIXES = (".localhost", ".local", ".internal", ".localdomain", ".home.arpa")
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean...
        "169.254.170.2",  # AWS ECS task metadata
        "169.254.169.123",  # AWS time sync
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud
        "fd00:ec2::254",  # AWS over IPv6
    )
)
CGNAT = ipaddress.ip_network("100.64.0.0/10")
RFC1918 = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")
NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NUMERIC_LABEL = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)$")
SAMPLE_SITE_PREFIX = "/sample-site/"
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if int(ip) >> 32 == 0 and int(ip) > 1:  # deprecated IPv4-compatible ::a.b.c.d
        return ipaddress.IPv4Address(int(ip))
    return None


def address_reason(ip: Address | str) -> str | None:
    """Why a crawl may not connect to ``ip``, or None for a public address."""
    if isinstance(ip, str):
        ip = ipaddress.ip_address(ip.strip("[]"))
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return f"link-local address {ip}"
        inner = _embedded_v4(ip)
        if inner is not None:
            reason = address_reason(inner)
            return None if reason is None else f"{reason} (inside {ip})"
    if ip in METADATA_ADDRESSES:
        return f"cloud metadata address {ip}"
    if ip.is_unspecified:
        return f"unspecified address {ip}"
    if ip.is_loopback:
        return f"loopback address {ip}"
    if ip.is_multicast:
        return f"multicast address {ip}"
    if ip.is_link_local:
        return f"link-local address {ip}"
    if isinstance(ip, ipaddress.IPv4Address):
        if ip in CGNAT:
            return f"CGNAT address {ip}"
        if any(ip in net for net in RFC1918):
            return f"private address {ip}"
    elif ip in UNIQUE_LOCAL:
        return f"unique-local address {ip}"
    if not ip.is_global or ip.is_reserved:
        return f"non-public address {ip}"
    return None


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def host_reason(host: str) -> str | None:
    """Why a crawl may not go to ``host`` (a URL's lower-case host, without brackets), judged by its text alone."""
    if not host:
        return "URL without a host"
    ip = _literal(host)
    if ip is not None:
        return address_reason(ip)
    if ":" in host:
        return f"malformed host {host}"
    name = host.rstrip(".")
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii").lower()
        except UnicodeError:
            return f"malformed host {host}"
    labels = name.split(".")
    if _NUMERIC_LABEL.match(labels[-1]):
        return f"non-canonical numeric host {host}"
    if name in METADATA_NAMES:
        return f"cloud metadata name {host}"
    if name == "localhost":
        return f"loopback name {host}"
    if name.endswith(INTERNAL_SUFFIXES):
        return f"internal name {host}"
    if not re.fullmatch(r"[a-z0-9_.-]+", name) or "" in labels:
        return f"malformed host {host}"
    return None


@dataclass(frozen=True, slots=True)
class SelfOrigin:
    """This server as a crawl target: ``hosts`` on ``port``, only for paths under ``path_prefix``."""

    port: int
    hosts: frozenset[str] = LOOPBACK_NAMES
    path_prefix: str = SAMPLE_SITE_PREFIX

    def matches(self, host: str, port: int, path: str) -> bool:
        """Whether a request to ``host:port`` for ``path`` (raw, as in the URL) is a request to this origin."""
        if port != self.port or host.rstrip(".") not in self.hosts:
            return False
        decoded = unquote(path)
        if "\\" in decoded or any(seg in (".", "..") for seg in decoded.split("/")):
            return False
        return decoded == self.path_prefix.rstrip("/") or decoded.startswith(self.path_prefix)


def _parse_allowed(entry: str) -> tuple[str, int | None]:
    """``host``, ``host:port``, ``[v6]``, ``[v6]:port``, ``*.suffix`` -> (host, port or None)."""
    entry = entry.strip().lower()
    if "://" in entry:
        parts = urlsplit(entry)
        return (parts.hostname or ""), parts.port
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:] else None
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        return host, int(port)
    return entry, None


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    """The policy: what :func:`host_reason` refuses, minus ``allowed_hosts`` and the ``self_origins``."""

    allowed_hosts: tuple[tuple[str, int | None], ...] = ()
    self_origins: tuple[SelfOrigin, ...] = ()
    _names: frozenset[str] = field(default=frozenset(), compare=False, repr=False)

    @classmethod
    def build(cls, allowed_hosts: Iterable[str] = (), self_origins: Iterable[SelfOrigin] = ()) -> EgressPolicy:
        """A policy from ``TIDINGS_CRAWL_ALLOWED_HOSTS`` entries and this server's origins."""
        parsed = tuple(_parse_allowed(entry) for entry in allowed_hosts if entry.strip())
        origins = tuple(self_origins)
        names = frozenset(host for host, _ in parsed) | frozenset(h for o in origins for h in o.hosts)
        return cls(parsed, origins, names)

    def with_self_origin(self, origin: SelfOrigin) -> EgressPolicy:
        """This policy plus one more origin of this server."""
        if origin in self.self_origins:
            return self
        return EgressPolicy(self.allowed_hosts, (*self.self_origins, origin), self._names | origin.hosts)

    def host_allowed(self, host: str, port: int | None = None) -> bool:
        """Whether ``host`` (and ``port``, when given) is listed in ``allowed_hosts``."""
        host = host.rstrip(".")
        for allowed, allowed_port in self.allowed_hosts:
            if allowed_port is not None and port is not None and allowed_port != port:
                continue
            if allowed_port is not None and port is None:
                continue
            if host == allowed or (allowed.startswith("*.") and host.endswith(allowed[1:])):
                return True
        return False

    def name_allowed(self, host: str) -> bool:
        """Whether the crawl process may connect to whatever ``host`` resolves to.

        True for the names listed in ``allowed_hosts`` (any port) and this server's own names: the request itself
        has already been checked by :meth:`check_url` (port and path included).
        """
        host = host.lower().rstrip(".")
        if host in self._names:
            return True
        return any(a.startswith("*.") and host.endswith(a[1:]) for a, _ in self.allowed_hosts)

    def check_url(self, url: str) -> str | None:
        """Why a crawl may not fetch ``url``, or None if it may (judged by the URL's text)."""
        try:
            parts = urlsplit(url.strip())
            port = parts.port
        except ValueError as exc:
            return f"malformed URL ({exc})"
        scheme = parts.scheme.lower()
        if scheme not in ALLOWED_SCHEMES:
            return f"scheme {scheme or '(none)'!r} is not http or https"
        if "@" in parts.netloc:
            return "URL with userinfo (user:password@host)"
        host = (parts.hostname or "").lower()
        effective_port = port if port is not None else (443 if scheme == "https" else 80)
        if self.host_allowed(host, effective_port):
            return None
        for origin in self.self_origins:
            if origin.matches(host, effective_port, parts.path or "/"):
                return None
        return host_reason(host)

    def check_address(self, host: str, address: str) -> str | None:
        """Why the crawl may not connect to ``address`` that ``host`` resolved to, or None."""
        if self.name_allowed(host):
            return None
        try:
            return address_reason(address)
        except ValueError:
            return f"unparseable address {address!r}"

    def to_setting(self) -> dict[str, Any]:
        """A JSON-ready form for the crawl process (:data:`POLICY_SETTING`)."""
        return {
            "allowed_hosts": [[host, port] for host, port in self.allowed_hosts],
            "self_origins": [
                {"port": o.port, "hosts": sorted(o.hosts), "path_prefix": o.path_prefix} for o in self.self_origins
            ],
        }

    @classmethod
    def from_setting(cls, value: dict[str, Any]) -> EgressPolicy:
        """Rebuild a policy from :meth:`to_setting`'s output."""
        allowed = tuple(
            (str(host), None if port is None else int(port)) for host, port in value.get("allowed_hosts", ())
        )
        origins = tuple(
            SelfOrigin(int(o["port"]), frozenset(o.get("hosts") or ()), str(o.get("path_prefix") or SAMPLE_SITE_PREFIX))
            for o in value.get("self_origins", ())
        )
        names = frozenset(host for host, _ in allowed) | frozenset(h for o in origins for h in o.hosts)
        return cls(allowed, origins, names)


async def check_target(policy: EgressPolicy, url: str, *, timeout: float = 3.0) -> str | None:
    """Why a job may not target ``url``: :meth:`EgressPolicy.check_url`, then the addresses its host resolves to
    now (any refused one refuses the URL). A name that does not resolve is left to the crawl to report."""
    reason = policy.check_url(url)
    if reason is not None:
        return reason
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if _literal(host) is not None or policy.name_allowed(host):
        return None
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(loop.getaddrinfo(host, parts.port or 80, type=socket.SOCK_STREAM), timeout)
    except (OSError, TimeoutError, UnicodeError):
        return None
    for info in infos:
        found = address_reason(str(info[4][0]))
        if found is not None:
            return f"{host} resolves to {found}"
    return None
