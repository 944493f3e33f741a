"""Redis key layout of the Redis broker, the same on one Redis, behind Sentinel and on Redis Cluster.

Every key of one channel carries the channel's name as its hash tag, so they share one hash slot (one Redis
Cluster shard) and a script can touch them together; node-wide data (the registry) shares one tag of its own::

    P:{<channel>}:meta     hash    e = epoch, o = last offset, b = bytes in history    EXPIRE history_ttl
    P:{<channel>}:hist     stream  entry id "<offset>-0", field p = the final JSON bytes  (trimmed by count and bytes)
    P:{<channel>}:pub      pub/sub channel (SPUBLISH in cluster mode) carrying the final JSON bytes
    P:{<channel>}:idem:<K> string  "<offset> <epoch>" of the publish with idempotency key K   EX idempotency_ttl
    P:{<channel>}:try:<T>  string  the same, for one keyless publish call's token T           EX 60 (its retries)
    P:{<channel>}:pconn    hash    node.conn -> user id             (presence: one field per connection)
    P:{<channel>}:pcount   hash    user id -> connections in the channel
    P:{<channel>}:pusers   zset    user id scored by user id        (member count = ZCARD, pages by score)
    P:{<channel>}:pinfo    hash    user id -> the user's public JSON
    P:{P#registry}:nodes   zset    node id scored by its lease expiry (ms, Redis clock)
    P:{P#registry}:conns   hash    node.conn -> "<user id>|<user JSON>"   (every connection of the cluster)
    P:{P#registry}:index   zset    lexical: "node.conn|" per connection, "node.conn|<channel>" per presence entry
    P:{P#registry}:ucount  hash    user id -> connections of that user across the cluster
    P:{P#registry}:stats   hash    connections, users (kept exact by the scripts)
    P:{P#registry}:reaped  list    one JSON record per connection of a dead node, popped by exactly one survivor

``P`` is ``TIDINGS_BROKER_PREFIX``. Channel names cannot contain ``{``, ``}`` or ``#`` (see
:data:`tidings.protocol.CHANNEL_RE`), so no channel can share the registry's tag.
"""

from __future__ import annotations

__all__ = ["Keys"]


class Keys:
    """Redis key names under one prefix."""

    __slots__ = ("conns", "index", "nodes", "prefix", "reaped", "registry", "stats", "ucount")

    def __init__(self, prefix: str) -> None:
        if any(ch in prefix for ch in "{}"):
            raise ValueError(f"The broker prefix cannot contain braces: {prefix!r}")
        self.prefix = prefix
        tag = f"{prefix}:{{{prefix}#registry}}"
        self.nodes = f"{tag}:nodes"
        self.conns = f"{tag}:conns"
        self.index = f"{tag}:index"
        self.ucount = f"{tag}:ucount"
        self.stats = f"{tag}:stats"
        self.reaped = f"{tag}:reaped"
        #: The registry scripts' KEYS, in this order.
        self.registry = [self.nodes, self.conns, self.index, self.ucount, self.stats, self.reaped]

    def _ch(self, channel: str, kind: str) -> str:
        return f"{self.prefix}:{{{channel}}}:{kind}"

    def meta(self, channel: str) -> str:
        """The channel's ``{e, o, b}`` hash."""
        return self._ch(channel, "meta")

    def hist(self, channel: str) -> str:
        """The channel's history stream."""
        return self._ch(channel, "hist")

    def pub(self, channel: str) -> str:
        """The channel's pub/sub channel."""
        return self._ch(channel, "pub")

    def attempt(self, channel: str, token: str) -> str:
        """The record of one keyless publish call (token ``T``): makes the client library's retries of it safe."""
        return self._ch(channel, f"try:{token}")

    def idem(self, channel: str, key: str) -> str:
        """An idempotency key's record on the channel (``"<offset> <epoch>"``, EX idempotency_ttl; same slot)."""
        return self._ch(channel, f"idem:{key}")

    def stream(self, channel: str) -> list[str]:
        """KEYS of the publish and recover scripts: meta, hist, pub."""
        return [self.meta(channel), self.hist(channel), self.pub(channel)]

    def presence(self, channel: str) -> list[str]:
        """KEYS of the presence scripts: pconn, pcount, pusers, pinfo."""
        return [self._ch(channel, kind) for kind in ("pconn", "pcount", "pusers", "pinfo")]
