"""Lua scripts moving job ids between RQ's lists and taskserve's leases.

Each runs atomically on the server, so that consumers in many processes never
hand the same fetched job back twice. RQ itself is not cluster-aware (its
jobs, queues and registries live in one Redis), and some scripts name keys
they only learn at run time (a job's hash, ``rq:job:<id>``).

A taskserve queue is one RQ queue per priority level (see
:mod:`taskserve_rq.engine`). The scripts that put a job id back into a queue
take the ten level queues as their last ten KEYS, levels 0 to 9 in order,
and put the id into its own level: the RQ queue its job hash names as
``origin`` (level 0 when that is none of them). Each push also drops a token
into the queue's wake list, which idle workers block on.
"""

from __future__ import annotations

from rq import Queue
from rq.job import Job

WAKE_TOKENS = 1000
"""Most tokens a wake list holds; idle workers need one each."""

WAKE_TTL_S = 60
"""Lifetime of a wake list no worker empties (a token is needed only between a
worker's fetch that found nothing and its wait)."""

_LEVELS = f"""
local LEVEL_0 = #KEYS - 9
local function level_queue(id)
  local origin = redis.call('HGET', '{Job.redis_job_namespace_prefix}' .. id, 'origin')
  if origin then
    local key = '{Queue.redis_queue_namespace_prefix}' .. origin
    for i = LEVEL_0, #KEYS do
      if KEYS[i] == key then return key end
    end
  end
  return KEYS[LEVEL_0]
end
local function wake(key)
  redis.call('LPUSH', key, '1')
  redis.call('LTRIM', key, 0, {WAKE_TOKENS - 1})
  redis.call('EXPIRE', key, {WAKE_TTL_S})
end
"""

# KEYS: intermediate, wake, level queues 0..9  ->  {queue key, job id} or nil
# The fetch: the first job of the highest level that has one moves to RQ's
# intermediate list, where it stays until its delivery ends. Finding every
# level empty, it empties the wake list: whatever tokens it held were for
# jobs already fetched.
FETCH = """
for i = #KEYS, 3, -1 do
  local id = redis.call('LMOVE', KEYS[i], KEYS[1], 'LEFT', 'RIGHT')
  if id then return {KEYS[i], id} end
end
redis.call('DEL', KEYS[2])
return false
"""

# KEYS: leases, intermediate;  ARGV: lease member, job id
# Ack: the delivery ends; its fetched entry is dropped only while its lease is
# ours (a lease reaped meanwhile means the job was handed to another consumer).
SETTLE = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('LREM', KEYS[2], 1, ARGV[2])
  return 1
end
return 0
"""

# KEYS: leases, intermediate, scheduled, wake, level queues 0..9
# ARGV: lease member, job id, where ('front' | 'back' | a unix time to schedule at)
# Hand a delivery back: to the head of its level's queue (stop, crash of a
# recorder), to its tail, or to RQ's scheduled registry (sent again later).
RELEASE = (
    _LEVELS
    + """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('LREM', KEYS[2], 1, ARGV[2])
if ARGV[3] == 'front' then
  redis.call('LPUSH', level_queue(ARGV[2]), ARGV[2])
  wake(KEYS[4])
elseif ARGV[3] == 'back' then
  redis.call('RPUSH', level_queue(ARGV[2]), ARGV[2])
  wake(KEYS[4])
else
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[2])
end
return 1
"""
)

# KEYS: scheduled, wake, level queues 0..9;  ARGV: now, limit  ->  how many were moved
# RQ's scheduler, without its lock or process: due jobs move to their level's tail.
PROMOTE = (
    _LEVELS
    + """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(due) do
  if redis.call('ZREM', KEYS[1], id) == 1 then
    redis.call('RPUSH', level_queue(id), id)
    wake(KEYS[2])
  end
end
return #due
"""
)

# KEYS: scheduled, job, level queues 0..9;  ARGV: job id, ttl (0 = delete)  ->  entries removed
# A cancelled task leaves the queues (or the scheduled registry) at once.
UNQUEUE = """
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
for i = 3, #KEYS do removed = removed + redis.call('LREM', KEYS[i], 0, ARGV[1]) end
if removed > 0 then
  if tonumber(ARGV[2]) > 0 then
    redis.call('HSET', KEYS[2], 'status', 'canceled')
    redis.call('EXPIRE', KEYS[2], ARGV[2])
  else
    redis.call('DEL', KEYS[2])
  end
end
return removed
"""

# KEYS: intermediate, leases, unleased, wake, started registries of levels 0..9,
#       level queues 0..9
# ARGV: now, grace seconds, job key prefix  ->  ids handed back to their queues
# Crash recovery. Every fetched job id sits in RQ's intermediate list until its
# delivery ends; a live consumer holds a lease on it ("<job id>:<execution id>"
# in the leases zset, renewed every third of the lease). A job whose lease ran
# out, or that was fetched but never leased within the grace (its consumer
# died right after the fetch), goes back to the head of its level's queue. A
# job whose hash is gone (deleted meanwhile) is dropped instead.
REAP = (
    _LEVELS
    + """
local now = tonumber(ARGV[1])
local grace = tonumber(ARGV[2])
local function job_of(member) return string.match(member, '^[^:]+') end
local live, expired = {}, {}
local entries = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
for i = 1, #entries, 2 do
  if tonumber(entries[i + 1]) >= now then
    live[job_of(entries[i])] = true
  else
    table.insert(expired, entries[i])
  end
end
local held = {}
for _, id in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do held[id] = (held[id] or 0) + 1 end
local requeued = {}
local function requeue(id)
  redis.call('LREM', KEYS[1], 1, id)
  held[id] = held[id] - 1
  redis.call('HDEL', KEYS[3], id)
  if redis.call('EXISTS', ARGV[3] .. id) == 1 then
    redis.call('LPUSH', level_queue(id), id)
    wake(KEYS[4])
    table.insert(requeued, id)
  end
end
for _, member in ipairs(expired) do
  redis.call('ZREM', KEYS[2], member)
  for i = 5, 14 do redis.call('ZREM', KEYS[i], member) end
  local id = job_of(member)
  if not live[id] and (held[id] or 0) > 0 then requeue(id) end
end
for id, count in pairs(held) do
  if count > 0 and not live[id] then
    local first = redis.call('HGET', KEYS[3], id)
    if not first then
      redis.call('HSET', KEYS[3], id, ARGV[1])
    elseif now - tonumber(first) >= grace then
      requeue(id)
    end
  end
end
for _, id in ipairs(redis.call('HKEYS', KEYS[3])) do
  if (held[id] or 0) == 0 or live[id] then redis.call('HDEL', KEYS[3], id) end
end
return requeued
"""
)
