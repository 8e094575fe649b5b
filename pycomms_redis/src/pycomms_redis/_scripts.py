"""The Lua scripts that make multi-step stream operations atomic on the server.

Each script is loaded once per connection pool and called by SHA (redis-py's
`Script` falls back to EVAL after a server restart flushed the script cache). Every
key a script touches is under the namespace's hash tag, see `pycomms_redis._keys`.

Ownership check, used by settle and renew: a delivery is ours only while the stream's
pending entries list says this consumer holds the entry *and* its delivery counter
still equals the one we saw at delivery. A redelivery (XAUTOCLAIM by anyone, us
included) bumps the counter, so a stale ack or renew settles nothing.
"""

from __future__ import annotations

_OWNED = """
local function owned(key, group, me, id, count)
  local p = redis.pcall('XPENDING', key, group, id, id, 1, me)
  if type(p) ~= 'table' or p.err or not p[1] then return false end
  return tonumber(p[1][4]) == count
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

SETTLE = (
    _OWNED
    + """
-- KEYS[1] service stream, KEYS[2] dead-letter stream, KEYS[3] delayed zset, KEYS[4..]
-- the streams of the operations. ARGV: group, consumer, then per operation:
--   'a'..k, id, count                      ack (k: index of the stream in KEYS)
--   'r'..k, id, count, delay ms, next attempt, data        retry
--   'd'..k, id, count, letter id, letter json, data         dead letter
-- Returns 1 per operation that settled, 0 where the lease had moved on.
local group, me = ARGV[1], ARGV[2]
local result = {}
local now = nil
local i = 3
while i <= #ARGV do
  local spec, id, count = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local kind, key = string.sub(spec, 1, 1), KEYS[tonumber(string.sub(spec, 2))]
  local ok = owned(key, group, me, id, count)
  if ok then redis.call('XACK', key, group, id) end
  if kind == 'r' then
    if ok then
      local delay = tonumber(ARGV[i + 3])
      if delay <= 0 then
        redis.call('XADD', KEYS[1], '*', 'd', ARGV[i + 5], 'a', ARGV[i + 4])
      else
        now = now or now_ms()
        local member = ARGV[i + 4] .. '|' .. KEYS[1] .. '|' .. redis.sha1hex(key .. ' ' .. id) .. '|' .. ARGV[i + 5]
        redis.call('ZADD', KEYS[3], now + delay, member)
      end
    end
    i = i + 6
  elseif kind == 'd' then
    if ok then redis.call('XADD', KEYS[2], '*', 'i', ARGV[i + 3], 'l', ARGV[i + 4], 'e', ARGV[i + 5]) end
    i = i + 6
  else
    i = i + 3
  end
  result[#result + 1] = ok and 1 or 0
end
return result
"""
)

RENEW = (
    _OWNED
    + """
-- KEYS[i] the stream of lease i; ARGV: group, consumer, then id, count per lease.
-- Resets the idle time of leases we still hold (JUSTID leaves the counter alone).
local group, me = ARGV[1], ARGV[2]
local result = {}
for i, key in ipairs(KEYS) do
  local id, count = ARGV[1 + 2 * i], tonumber(ARGV[2 + 2 * i])
  if owned(key, group, me, id, count) then
    redis.call('XCLAIM', key, group, me, 0, id, 'JUSTID')
    result[i] = 1
  else
    result[i] = 0
  end
end
return result
"""
)

CLAIM = """
-- KEYS: streams; ARGV: group, consumer, min idle ms, budget, then a cursor per stream.
-- Takes over entries idle longer than the visibility timeout (their consumer died or
-- stalled). Returns per stream {next cursor, entries, delivery counters}.
local group, me, idle = ARGV[1], ARGV[2], ARGV[3]
local budget = tonumber(ARGV[4])
local out = {}
for i, key in ipairs(KEYS) do
  local cursor = ARGV[4 + i]
  local entries, counts = {}, {}
  if budget > 0 then
    local r = redis.pcall('XAUTOCLAIM', key, group, me, idle, cursor, 'COUNT', budget)
    if type(r) == 'table' and not r.err then
      cursor = r[1]
      for _, e in ipairs(r[2]) do
        if type(e) == 'table' and e[2] then
          local p = redis.call('XPENDING', key, group, e[1], e[1], 1)
          entries[#entries + 1] = e
          counts[#counts + 1] = p[1] and tonumber(p[1][4]) or 1
        end
      end
      budget = budget - #entries
    end
  end
  out[i] = {cursor, entries, counts}
end
return out
"""

RELEASE_ALL = """
-- KEYS[1] service stream, KEYS[2..] every stream the consumer reads.
-- ARGV: group, consumer. Hands every entry the consumer holds back to the service
-- (re-added to its service stream with the next attempt number), then removes the
-- consumer. Returns how many entries were released.
local group, me = ARGV[1], ARGV[2]
local released = 0
for i = 2, #KEYS do
  local key = KEYS[i]
  local pending = redis.pcall('XPENDING', key, group, '-', '+', 100000, me)
  if type(pending) == 'table' and not pending.err then
    for _, p in ipairs(pending) do
      local id, count = p[1], tonumber(p[4])
      local entry = redis.call('XRANGE', key, id, id)[1]
      if entry then
        local data, attempt = nil, 1
        local f = entry[2]
        for j = 1, #f, 2 do
          if f[j] == 'd' then data = f[j + 1] elseif f[j] == 'a' then attempt = tonumber(f[j + 1]) end
        end
        if data then
          redis.call('XADD', KEYS[1], '*', 'd', data, 'a', attempt + count)
          released = released + 1
        end
      end
      redis.call('XACK', key, group, id)
    end
    redis.pcall('XGROUP', 'DELCONSUMER', key, group, me)
  end
end
return released
"""

MOVE_DUE = """
-- KEYS[1] delayed zset; ARGV[1] most entries to move.
-- Moves due retries to their service stream. Returns {moved, ms until the next one or -1}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, m in ipairs(due) do
  local attempt, stream, data = string.match(m, '^(%d+)|([^|]*)|[^|]*|(.*)$')
  if attempt then redis.call('XADD', stream, '*', 'd', data, 'a', attempt) end
  redis.call('ZREM', KEYS[1], m)
end
local wait = -1
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if nxt[2] then wait = math.max(0, tonumber(nxt[2]) - now) end
return {#due, wait}
"""

TRIM = """
-- KEYS: streams; ARGV[1]: idle ms after which a consumer without pending entries is removed.
-- Trims each stream below the oldest entry any of its groups still needs: its oldest
-- pending entry, else its last delivered one. Streams without groups are left alone
-- (commands wait there for their service to start once).
local function before(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am < bm or (am == bm and as < bs)
end
local function fields(flat)
  local t = {}
  for j = 1, #flat, 2 do t[flat[j]] = flat[j + 1] end
  return t
end
local max_idle = tonumber(ARGV[1])
local trimmed = 0
for _, key in ipairs(KEYS) do
  local groups = redis.pcall('XINFO', 'GROUPS', key)
  if type(groups) == 'table' and not groups.err and #groups > 0 then
    local bound = nil
    for _, raw in ipairs(groups) do
      local g = fields(raw)
      local need = g['last-delivered-id']
      local summary = redis.call('XPENDING', key, g['name'])
      if tonumber(summary[1]) > 0 then need = summary[2] end
      if bound == nil or before(need, bound) then bound = need end
      for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', key, g['name'])) do
        local consumer = fields(c)
        if tonumber(consumer['pending']) == 0 and tonumber(consumer['idle']) > max_idle then
          redis.call('XGROUP', 'DELCONSUMER', key, g['name'], consumer['name'])
        end
      end
    end
    trimmed = trimmed + redis.call('XTRIM', key, 'MINID', '~', bound)
  end
end
return trimmed
"""

HEARTBEAT = """
-- KEYS[1] node key, KEYS[2] node set, KEYS[3] reply stream; ARGV: node json, ttl ms, node id.
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
if redis.call('EXISTS', KEYS[3]) == 0 then
  redis.call('XADD', KEYS[3], 'MAXLEN', 0, '*', 'x', '')
end
redis.call('PEXPIRE', KEYS[3], ARGV[2])
return 1
"""

NODES = """
-- KEYS[1] node set; ARGV[1] node key prefix. Returns live nodes' JSON, prunes the rest.
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local value = redis.call('GET', ARGV[1] .. id)
  if value then out[#out + 1] = value else redis.call('SREM', KEYS[1], id) end
end
return out
"""

REPLAY = """
-- KEYS[1] dead-letter stream, KEYS[2] service stream; ARGV: dead-letter entry ids.
-- Moves each still-present letter's original envelope back with attempt 1.
local moved = 0
for _, id in ipairs(ARGV) do
  local entry = redis.call('XRANGE', KEYS[1], id, id)[1]
  if entry then
    local f = entry[2]
    for j = 1, #f, 2 do
      if f[j] == 'e' then redis.call('XADD', KEYS[2], '*', 'd', f[j + 1]) end
    end
    moved = moved + redis.call('XDEL', KEYS[1], id)
  end
end
return moved
"""

PUBLISH = """
-- KEYS: target streams; ARGV: per message a spec (mode + key index) and the data.
-- Modes: c = command stream (created if missing), e = event stream (only if some
-- service subscribed), r = reply stream (capped; one that does not exist, such as a
-- foreign requester's, is created with a TTL of 60 s so that a reply nobody reads
-- goes away; a PyComms node's stream has its presence TTL already).
-- One script call per batch, run atomically.
for i = 1, #ARGV, 2 do
  local spec = ARGV[i]
  local mode, key = string.sub(spec, 1, 1), KEYS[tonumber(string.sub(spec, 2))]
  if mode == 'c' then
    redis.call('XADD', key, '*', 'd', ARGV[i + 1])
  elseif mode == 'e' then
    redis.call('XADD', key, 'NOMKSTREAM', '*', 'd', ARGV[i + 1])
  else
    local fresh = redis.call('EXISTS', key) == 0
    redis.call('XADD', key, 'MAXLEN', '~', 10000, '*', 'd', ARGV[i + 1])
    if fresh then redis.call('PEXPIRE', key, 60000) end
  end
end
return #ARGV / 2
"""
