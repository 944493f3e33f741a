"""Lua scripts shared by :class:`~tidings.broker.redis.RedisBroker` and :mod:`tidings.publisher`.

Every script declares every key it touches in ``KEYS`` (the layout is in :mod:`tidings.broker.keys`), and the
keys of one call share one hash slot, so the scripts run unchanged on one Redis, behind Sentinel and on Redis
Cluster. Channel scripts take a channel's keys; registry scripts take :attr:`Keys.registry
<tidings.broker.keys.Keys.registry>`. Publishing uses ``PUBLISH`` on one Redis and ``SPUBLISH`` (sharded pub/sub)
on Redis Cluster: the command is an argument.

A node is alive while its lease (its score in ``nodes``, Redis clock + ``node_lease_ttl``) is in the future. Every
registry script first *reaps* nodes whose lease has passed: their connections stop counting at once, and one
record per connection (user, info, the channels it was present in) is pushed on ``reaped``, which survivors pop
(``LPOP`` is atomic, so exactly one of them handles each record).
"""

from __future__ import annotations

import secrets
from typing import Any

from tidings.broker.keys import Keys

__all__ = [
    "CONNECTION_ADD",
    "CONNECTION_REMOVE",
    "HEARTBEAT",
    "MARKER",
    "NODE_LEAVE",
    "PRESENCE_ADD",
    "PRESENCE_PAGE",
    "PRESENCE_REMOVE",
    "PUBLISH",
    "REAPED_MAX",
    "RECOVER",
    "RETRY_RECORD_TTL",
    "STATS",
    "Keys",
    "body_head",
    "dedup_record",
    "parse_position",
    "publish_reply",
]

#: Payload prefix of the markers the recover script publishes (a publication always starts with ``{``).
MARKER = b"~"

#: Reaped-connection records kept when no survivor pops them (the oldest are dropped).
REAPED_MAX = 100_000


def body_head(body: bytes) -> bytes:
    """``body`` (a JSON object) without its closing ``}``, ready for ``"offset":...`` (as ``with_position``)."""
    head = body.rstrip()[:-1].rstrip()
    return head if head.endswith(b"{") else head + b","


#: Seconds a keyless publish call's record lives: longer than the client library's retries of that one call take.
RETRY_RECORD_TTL = 60


def dedup_record(keys: Keys, channel: str, idempotency_key: str | None, idempotency_ttl: int) -> tuple[str, int]:
    """The publish script's ``KEYS[4]`` and ``ARGV[8]``: the caller's idempotency key, else a token of this call.

    redis-py retries a command whose reply was lost (a dropped connection, a timeout), and the script may already
    have run. With a fresh token per call, such a retry finds the record the first run left and gets the original
    position back instead of publishing a second time. A repeat that the script reports for a token is therefore
    not a duplicate to the caller: it is the same call.
    """
    if idempotency_key is not None:
        return keys.idem(channel, idempotency_key), idempotency_ttl
    return keys.attempt(channel, secrets.token_hex(8)), RETRY_RECORD_TTL


def publish_reply(reply: list[Any], keyed: bool) -> tuple[int, bytes, bool]:
    """``(offset, epoch, duplicate)`` from the publish script's reply. A record seen again is a duplicate only for
    a caller's idempotency key (``keyed``); for a call's own token it is redis-py retrying that same call."""
    offset, epoch, *seen = reply
    return int(offset), epoch, bool(seen) and keyed


def parse_position(payload: bytes) -> tuple[int, str]:
    """The ``offset`` and ``epoch`` the publish script appended to ``payload`` (read from its tail, no decoding)."""
    i = payload.rfind(b'"offset":')
    j = payload.index(b',"epoch":"', i)
    return int(payload[i + 9 : j]), payload[j + 10 : -2].decode()


# Prepended to the channel scripts. KEYS: meta, hist, pub.
# current_epoch(check): the channel's epoch, or false if it has none -- or, with check = '1' (Sentinel and Redis
# Cluster), if the channel's metadata was written under another replication history than the server's current
# one (master_replid changes when a replica is promoted). Replication is asynchronous: a promoted replica may lack
# the last publications its old master acknowledged (and delivered), so reusing their offsets in the same epoch
# would make recovering clients skip or repeat messages. Starting a new epoch makes them hear recovered: false.
_GENERATION = """
local function replid()
  return string.match(redis.call('INFO', 'replication'), 'master_replid:(%w+)') or ''
end
local generation = ''
local function current_epoch(check)
  if check == '1' then
    generation = replid()
  end
  local meta = redis.call('HMGET', KEYS[1], 'e', 'r')
  if not meta[1] then
    return false
  end
  if generation ~= '' and meta[2] ~= generation then
    return false
  end
  return meta[1]
end
local function new_stream(epoch)
  redis.call('DEL', KEYS[2])
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'e', epoch, 'o', 0, 'b', 0, 'r', generation)
end
"""

# Offset assignment, history append (bounded by count and bytes) and fan-out in one atomic step.
# KEYS: meta, hist, pub. ARGV: body_head(body), epoch for a new stream, history_size, history_ttl,
# history_max_bytes (0: no byte bound), 'PUBLISH' or 'SPUBLISH', '1' to start a new epoch after a failover.
# Returns {offset, epoch}. Optional KEYS[4] (an idempotency key's record, or one call's token: see dedup_record) with
# ARGV[8] (its TTL): when the key was seen within its TTL nothing is stored or published and the original
# {offset, epoch, 1} is returned.
# The epoch is created with the channel's metadata; if the metadata was lost (TTL, a Redis
# restart without persistence, a failover that lost it) the next publish starts a new epoch at offset 1 and drops
# any stale history. History keeps the newest entries whose total size is at most history_max_bytes: the oldest
# are removed first (a publication larger than the bound is not kept at all).
PUBLISH = (
    _GENERATION
    + """
if KEYS[4] then
  local seen = redis.call('GET', KEYS[4])
  if seen then
    local sep = string.find(seen, ' ', 1, true)
    return {tonumber(string.sub(seen, 1, sep - 1)), string.sub(seen, sep + 1), 1}
  end
end
local epoch = current_epoch(ARGV[7])
if not epoch then
  epoch = ARGV[2]
  new_stream(epoch)
end
local offset = redis.call('HINCRBY', KEYS[1], 'o', 1)
local payload = ARGV[1] .. '"offset":' .. offset .. ',"epoch":"' .. epoch .. '"}'
local size = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
local maxb = tonumber(ARGV[5])
if size > 0 then
  redis.call('XADD', KEYS[2], offset .. '-0', 'p', payload)
  local bytes = redis.call('HINCRBY', KEYS[1], 'b', #payload)
  local len = redis.call('XLEN', KEYS[2])
  while len > 0 and (len > size or (maxb > 0 and bytes > maxb)) do
    local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)[1]
    redis.call('XDEL', KEYS[2], first[1])
    bytes = redis.call('HINCRBY', KEYS[1], 'b', -#first[2][2])
    len = len - 1
  end
  redis.call('EXPIRE', KEYS[2], ttl)
end
redis.call('EXPIRE', KEYS[1], ttl)
redis.call(ARGV[6], KEYS[3], payload)
if KEYS[4] then
  redis.call('SET', KEYS[4], offset .. ' ' .. epoch, 'EX', tonumber(ARGV[8]))
end
return {offset, epoch}
"""
)

# The channel's position, and with since >= 0 the history after it (only if the epoch matches).
# KEYS: meta, hist, pub. ARGV: epoch for a new stream, history_ttl, since (-1: position only), since_epoch,
# marker ('' for none), 'PUBLISH' or 'SPUBLISH', '1' to start a new epoch after a failover. The marker, published
# first on the channel itself, tells the calling node's reader that every publication up to the returned offset has
# gone through its pub/sub stream (so history and live publications never overlap); other nodes ignore markers.
# Returns {offset, epoch, entries}.
RECOVER = (
    _GENERATION
    + """
if ARGV[5] ~= '' then
  redis.call(ARGV[6], KEYS[3], ARGV[5])
end
local epoch = current_epoch(ARGV[7])
local offset = 0
if not epoch then
  epoch = ARGV[1]
  new_stream(epoch)
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
)

# Prepended to the registry scripts. KEYS: nodes, conns, index, ucount, stats, reaped.
_REGISTRY = (
    """
local NODES, CONNS, INDEX, UCOUNT, STATS, REAPED = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function drop_conn(conn, uid)
  if redis.call('HDEL', CONNS, conn) == 1 then
    redis.call('HINCRBY', STATS, 'connections', -1)
    if redis.call('HINCRBY', UCOUNT, uid, -1) <= 0 then
      redis.call('HDEL', UCOUNT, uid)
      redis.call('HINCRBY', STATS, 'users', -1)
    end
  end
end
-- Forget a node's connections and index entries; with report, push one record per connection on REAPED.
local function remove_node(node, report)
  local lo, hi = '[' .. node .. '.', '(' .. node .. '/'
  local items = redis.call('ZRANGEBYLEX', INDEX, lo, hi)
  local order, chans = {}, {}
  for _, item in ipairs(items) do
    local sep = string.find(item, '|', 1, true)
    local conn, ch = string.sub(item, 1, sep - 1), string.sub(item, sep + 1)
    if chans[conn] == nil then
      chans[conn] = {}
      order[#order + 1] = conn
    end
    if ch ~= '' then
      table.insert(chans[conn], ch)
    end
  end
  for _, conn in ipairs(order) do
    local rec = redis.call('HGET', CONNS, conn)
    if rec then
      local sep = string.find(rec, '|', 1, true)
      local uid, info = string.sub(rec, 1, sep - 1), string.sub(rec, sep + 1)
      drop_conn(conn, uid)
      if report then
        local list = '[]'
        if #chans[conn] > 0 then
          list = '["' .. table.concat(chans[conn], '","') .. '"]'
        end
        redis.call('RPUSH', REAPED, '{"node":"' .. node .. '","conn":"' .. conn .. '","user_id":' .. uid
          .. ',"info":' .. info .. ',"channels":' .. list .. '}')
      end
    end
  end
  redis.call('ZREMRANGEBYLEX', INDEX, lo, hi)
  redis.call('ZREM', NODES, node)
end
local function reap()
  local dead = redis.call('ZRANGEBYSCORE', NODES, '-inf', now)
  for _, node in ipairs(dead) do
    remove_node(node, true)
  end
  if #dead > 0 then
    redis.call('LTRIM', REAPED, -"""
    + str(REAPED_MAX)
    + """, -1)
  end
end
"""
)

# ARGV: node, lease_ms. Reaps dead nodes, pushes this node's lease forward.
# Returns 1 if the node was not registered (first beat, reaped, or Redis lost its data): re-register everything.
HEARTBEAT = (
    _REGISTRY
    + """
reap()
return redis.call('ZADD', NODES, now + tonumber(ARGV[2]), ARGV[1])
"""
)

# ARGV: node. Removes the node and its connections without reporting them (graceful shutdown).
NODE_LEAVE = (
    _REGISTRY
    + """
remove_node(ARGV[1], false)
return 1
"""
)

# ARGV: node, lease_ms, user_id, node.conn, user JSON. Atomic add-and-count: returns the user's connection count.
CONNECTION_ADD = (
    _REGISTRY
    + """
local node, uid, conn = ARGV[1], ARGV[3], ARGV[4]
reap()
if not redis.call('ZSCORE', NODES, node) then
  redis.call('ZADD', NODES, now + tonumber(ARGV[2]), node)
end
if redis.call('HSET', CONNS, conn, uid .. '|' .. ARGV[5]) == 1 then
  redis.call('HINCRBY', STATS, 'connections', 1)
  if redis.call('HINCRBY', UCOUNT, uid, 1) == 1 then
    redis.call('HINCRBY', STATS, 'users', 1)
  end
end
redis.call('ZADD', INDEX, 0, conn .. '|')
return tonumber(redis.call('HGET', UCOUNT, uid))
"""
)

# ARGV: node.conn, user_id.
CONNECTION_REMOVE = (
    _REGISTRY
    + """
drop_conn(ARGV[1], ARGV[2])
redis.call('ZREMRANGEBYLEX', INDEX, '[' .. ARGV[1] .. '|', '(' .. ARGV[1] .. '}')
return 1
"""
)

# Returns {connections, users} after reaping dead nodes.
STATS = (
    _REGISTRY
    + """
reap()
local v = redis.call('HMGET', STATS, 'connections', 'users')
return {math.max(tonumber(v[1] or 0), 0), math.max(tonumber(v[2] or 0), 0)}
"""
)

# KEYS: pconn, pcount, pusers, pinfo. ARGV: node.conn, user_id, user JSON, ttl_ms[, score]. O(1) (ZADD: O(log n)).
# The score orders members for paging: the user id itself, or (string ids) the score the caller computed.
# Returns {1 if the user had no connection in the channel before, member count}.
PRESENCE_ADD = """
local new = 0
if redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  if redis.call('HINCRBY', KEYS[2], ARGV[2], 1) == 1 then
    redis.call('ZADD', KEYS[3], tonumber(ARGV[5] or ARGV[2]), ARGV[2])
    redis.call('HSET', KEYS[4], ARGV[2], ARGV[3])
    new = 1
  end
end
local ttl = tonumber(ARGV[4])
for i = 1, 4 do
  redis.call('PEXPIRE', KEYS[i], ttl)
end
return {new, redis.call('ZCARD', KEYS[3])}
"""

# KEYS: pconn, pcount, pusers, pinfo. ARGV: node.conn, user_id.
# Returns {1 if the connection was there and its user has none left in the channel, member count}.
PRESENCE_REMOVE = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then
  return {0, redis.call('ZCARD', KEYS[3])}
end
local gone = 0
if redis.call('HINCRBY', KEYS[2], ARGV[2], -1) <= 0 then
  redis.call('HDEL', KEYS[2], ARGV[2])
  redis.call('ZREM', KEYS[3], ARGV[2])
  redis.call('HDEL', KEYS[4], ARGV[2])
  gone = 1
end
return {gone, redis.call('ZCARD', KEYS[3])}
"""

# KEYS: pusers, pinfo. ARGV: after (user id; members with a larger id are returned), limit.
# Returns {member count, user JSON...} in user id order.
PRESENCE_PAGE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf', 'LIMIT', 0, tonumber(ARGV[2]))
local out = {redis.call('ZCARD', KEYS[1])}
if #ids > 0 then
  local infos = redis.call('HMGET', KEYS[2], unpack(ids))
  for i = 1, #ids do
    out[#out + 1] = infos[i] or ('{"user_id":' .. ids[i] .. '}')
  end
end
return out
"""
