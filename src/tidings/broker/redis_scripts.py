"""Key layout and Lua scripts shared by :class:`~tidings.broker.redis.RedisBroker` and :mod:`tidings.publisher`.

Everything lives under one prefix ``P`` (``TIDINGS_BROKER_PREFIX``)::

    P:meta:<channel>    hash  {e: epoch, o: last offset}            EXPIRE history_ttl on each publish
    P:hist:<channel>    stream, entry id "<offset>-0", field p = the final JSON bytes (MAXLEN history_size)
    P:pub:<channel>     pub/sub channel carrying the final JSON bytes
    P:pres:<channel>    hash  conn_id -> "<node>|<user_id>|<user json>"   PEXPIRE presence_ttl, refreshed by heartbeats
    P:nodes             zset  node_id scored by its expiry (ms, Redis clock); heartbeats push the score forward
    P:nconn:<node>      hash  conn_id -> user_id   (a node's connections, dropped when the node is reaped)
    P:uconn:<user_id>   hash  conn_id -> node_id   (a user's connections across the cluster)
    P:stats             hash  {connections: n, users: n}  kept exact by the scripts below

A node is alive while its score in ``P:nodes`` is in the future. Scripts that read presence or connections ignore
(and delete) entries of dead nodes, so a killed node's users disappear after ``presence_ttl`` without anyone
having to notice the death. The presence and connection scripts touch keys they compute from ``P`` (not only
``KEYS``): they suit a single Redis server or a replicated primary, not Redis Cluster.
"""

from __future__ import annotations

__all__ = [
    "CONNECTION_ADD",
    "CONNECTION_REMOVE",
    "HEARTBEAT",
    "NODE_LEAVE",
    "PRESENCE_ADD",
    "PRESENCE_GET",
    "PRESENCE_REMOVE",
    "PUBLISH",
    "RECOVER",
    "STATS",
    "Keys",
    "body_head",
    "parse_position",
]


class Keys:
    """Redis key names under one prefix."""

    __slots__ = ("nodes", "prefix", "stats")

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.nodes = f"{prefix}:nodes"
        self.stats = f"{prefix}:stats"

    def meta(self, channel: str) -> str:
        """The channel's ``{e, o}`` hash."""
        return f"{self.prefix}:meta:{channel}"

    def hist(self, channel: str) -> str:
        """The channel's history stream."""
        return f"{self.prefix}:hist:{channel}"

    def pub(self, channel: str) -> str:
        """The channel's pub/sub channel."""
        return f"{self.prefix}:pub:{channel}"

    def pres(self, channel: str) -> str:
        """The channel's presence hash."""
        return f"{self.prefix}:pres:{channel}"


def body_head(body: bytes) -> bytes:
    """``body`` (a JSON object) without its closing ``}``, ready for ``"offset":...`` (as ``with_position``)."""
    head = body.rstrip()[:-1].rstrip()
    return head if head.endswith(b"{") else head + b","


def parse_position(payload: bytes) -> tuple[int, str]:
    """The ``offset`` and ``epoch`` the publish script appended to ``payload`` (read from its tail, no decoding)."""
    i = payload.rfind(b'"offset":')
    j = payload.index(b',"epoch":"', i)
    return int(payload[i + 9 : j]), payload[j + 10 : -2].decode()


# Offset assignment, history append and fan-out in one atomic step.
# KEYS: meta, hist. ARGV: body_head(body), epoch for a new stream, history_size, history_ttl, pub channel.
# Returns {offset, epoch}. The epoch is created with the channel's metadata; if the metadata was lost (TTL, a Redis
# restart without persistence) the next publish starts a new epoch at offset 1 and drops any stale history.
PUBLISH = """
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[2]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', epoch, 'o', 0)
end
local offset = redis.call('HINCRBY', KEYS[1], 'o', 1)
local payload = ARGV[1] .. '"offset":' .. offset .. ',"epoch":"' .. epoch .. '"}'
local size = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
if size > 0 then
  redis.call('XADD', KEYS[2], 'MAXLEN', size, offset .. '-0', 'p', payload)
  redis.call('EXPIRE', KEYS[2], ttl)
end
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('PUBLISH', ARGV[5], payload)
return {offset, epoch}
"""

# The channel's position, and with since >= 0 the history after it (only if the epoch matches).
# KEYS: meta, hist. ARGV: epoch for a new stream, history_ttl, since (-1: position only), since_epoch,
# marker channel ('' for none), marker. The marker, published last, tells the calling node's reader that every
# publication up to the returned offset has gone through its pub/sub stream (so history and live never overlap).
# Returns {offset, epoch, entries}.
RECOVER = """
if ARGV[5] ~= '' then
  redis.call('PUBLISH', ARGV[5], ARGV[6])
end
local epoch = redis.call('HGET', KEYS[1], 'e')
local offset = 0
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', epoch, 'o', 0)
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
else
  offset = tonumber(redis.call('HGET', KEYS[1], 'o'))
end
local since = tonumber(ARGV[3])
if since < 0 or epoch ~= ARGV[4] or since >= offset then
  return {offset, epoch, {}}
end
return {offset, epoch, redis.call('XRANGE', KEYS[2], (since + 1) .. '-0', '+')}
"""

# Helpers prepended to the cluster-registry scripts; ARGV[1] is always the key prefix.
_COMMON = """
local P = ARGV[1]
local NODES = P .. ':nodes'
local STATS = P .. ':stats'
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local liveness = {}
local function alive(node)
  local known = liveness[node]
  if known == nil then
    local score = redis.call('ZSCORE', NODES, node)
    known = score ~= false and score ~= nil and tonumber(score) > now
    liveness[node] = known
  end
  return known
end
local function drop_conn(conn, uid)
  local ukey = P .. ':uconn:' .. uid
  if redis.call('HDEL', ukey, conn) == 1 then
    redis.call('HINCRBY', STATS, 'connections', -1)
    if redis.call('HLEN', ukey) == 0 then
      redis.call('HINCRBY', STATS, 'users', -1)
    end
  end
end
local function reap_node(node)
  local nkey = P .. ':nconn:' .. node
  local all = redis.call('HGETALL', nkey)
  for i = 1, #all, 2 do
    drop_conn(all[i], all[i + 1])
  end
  redis.call('DEL', nkey)
  redis.call('ZREM', NODES, node)
end
local function reap()
  local dead = redis.call('ZRANGEBYSCORE', NODES, '-inf', now)
  for _, node in ipairs(dead) do
    reap_node(node)
  end
end
local function entry_fields(value)
  return string.match(value, '^([^|]*)|([^|]*)|')
end
"""

# ARGV: prefix, node, ttl_ms. Pushes the node's expiry forward and reaps dead nodes.
# Returns 1 if the node was not registered (first beat, reaped, or Redis lost its data): re-register everything.
HEARTBEAT = (
    _COMMON
    + """
reap()
local added = redis.call('ZADD', NODES, now + tonumber(ARGV[3]), ARGV[2])
return added
"""
)

# ARGV: prefix, node. Removes the node and its connection entries (graceful shutdown).
NODE_LEAVE = (
    _COMMON
    + """
reap_node(ARGV[2])
return 1
"""
)

# ARGV: prefix, node, user_id, conn_id. Atomic add-and-count; returns the user's live connection count.
CONNECTION_ADD = (
    _COMMON
    + """
local node, uid, conn = ARGV[2], ARGV[3], ARGV[4]
reap()
local ukey = P .. ':uconn:' .. uid
local current = redis.call('HGETALL', ukey)
for i = 1, #current, 2 do
  if not alive(current[i + 1]) then
    redis.call('HDEL', P .. ':nconn:' .. current[i + 1], current[i])
    drop_conn(current[i], uid)
  end
end
if redis.call('HSET', ukey, conn, node) == 1 then
  redis.call('HINCRBY', STATS, 'connections', 1)
  if redis.call('HLEN', ukey) == 1 then
    redis.call('HINCRBY', STATS, 'users', 1)
  end
end
redis.call('HSET', P .. ':nconn:' .. node, conn, uid)
return redis.call('HLEN', ukey)
"""
)

# ARGV: prefix, node, user_id, conn_id.
CONNECTION_REMOVE = (
    _COMMON
    + """
redis.call('HDEL', P .. ':nconn:' .. ARGV[2], ARGV[4])
drop_conn(ARGV[4], ARGV[3])
return 1
"""
)

# ARGV: prefix. Returns {connections, users} after reaping dead nodes.
STATS = (
    _COMMON
    + """
reap()
local v = redis.call('HMGET', STATS, 'connections', 'users')
return {math.max(tonumber(v[1] or 0), 0), math.max(tonumber(v[2] or 0), 0)}
"""
)

# KEYS: presence hash. ARGV: prefix, conn_id, user_id, entry value, ttl_ms.
# Returns 1 if the user had no live connection in the channel before this one.
PRESENCE_ADD = (
    _COMMON
    + """
local conn, uid = ARGV[2], ARGV[3]
local present = false
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local node, user = entry_fields(all[i + 1])
  if not alive(node) then
    redis.call('HDEL', KEYS[1], all[i])
  elseif user == uid and all[i] ~= conn then
    present = true
  end
end
redis.call('HSET', KEYS[1], conn, ARGV[4])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[5]))
if present then return 0 end
return 1
"""
)

# KEYS: presence hash. ARGV: prefix, conn_id, user_id.
# Returns 1 if the connection was there and its user has no live connection left in the channel.
PRESENCE_REMOVE = (
    _COMMON
    + """
if redis.call('HDEL', KEYS[1], ARGV[2]) == 0 then return 0 end
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local node, user = entry_fields(all[i + 1])
  if not alive(node) then
    redis.call('HDEL', KEYS[1], all[i])
  elseif user == ARGV[3] then
    return 0
  end
end
return 1
"""
)

# KEYS: presence hash. ARGV: prefix. Returns the values of live entries (dead nodes' entries are deleted).
PRESENCE_GET = (
    _COMMON
    + """
local out = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local node = entry_fields(all[i + 1])
  if alive(node) then
    out[#out + 1] = all[i + 1]
  else
    redis.call('HDEL', KEYS[1], all[i])
  end
end
return out
"""
)
