"""Lua scripts moving job ids between RQ's lists and taskserve's leases.

Each runs atomically on the server, so that consumers in many processes never
hand the same fetched job back twice. RQ itself is not cluster-aware (its
jobs, queues and registries live in one Redis), and the crash reaper checks
job hashes it can only name at run time (``rq:job:<id>``).
"""

from __future__ import annotations

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

# KEYS: leases, intermediate, queue, scheduled
# ARGV: lease member, job id, where ('front' | 'back' | a unix time to schedule at)
# Hand a delivery back: to the head of the queue (stop, crash of a recorder),
# to its tail, or to RQ's scheduled registry (a retry after its backoff).
RELEASE = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('LREM', KEYS[2], 1, ARGV[2])
if ARGV[3] == 'front' then
  redis.call('LPUSH', KEYS[3], ARGV[2])
elseif ARGV[3] == 'back' then
  redis.call('RPUSH', KEYS[3], ARGV[2])
else
  redis.call('ZADD', KEYS[4], ARGV[3], ARGV[2])
end
return 1
"""

# KEYS: scheduled, queue;  ARGV: now, limit  ->  how many were moved
# RQ's scheduler, without its lock or process: due jobs move to the queue tail.
PROMOTE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(due) do
  if redis.call('ZREM', KEYS[1], id) == 1 then redis.call('RPUSH', KEYS[2], id) end
end
return #due
"""

# KEYS: queue, scheduled, job;  ARGV: job id, ttl (0 = delete)  ->  entries removed
# A cancelled task leaves the queue (or the scheduled registry) at once.
UNQUEUE = """
local removed = redis.call('LREM', KEYS[1], 0, ARGV[1]) + redis.call('ZREM', KEYS[2], ARGV[1])
if removed > 0 then
  if tonumber(ARGV[2]) > 0 then
    redis.call('HSET', KEYS[3], 'status', 'canceled')
    redis.call('EXPIRE', KEYS[3], ARGV[2])
  else
    redis.call('DEL', KEYS[3])
  end
end
return removed
"""

# KEYS: queue, intermediate, leases, started, unleased
# ARGV: now, grace seconds, job key prefix  ->  ids handed back to the queue
# Crash recovery. Every fetched job id sits in RQ's intermediate list until its
# delivery ends; a live consumer holds a lease on it ("<job id>:<execution id>"
# in the leases zset, renewed every third of the lease). A job whose lease ran
# out, or that was fetched but never leased within the grace (its consumer
# died right after the fetch), goes back to the head of the queue. A job whose
# hash is gone (deleted meanwhile) is dropped instead.
REAP = """
local now = tonumber(ARGV[1])
local grace = tonumber(ARGV[2])
local function job_of(member) return string.match(member, '^[^:]+') end
local live, expired = {}, {}
local entries = redis.call('ZRANGE', KEYS[3], 0, -1, 'WITHSCORES')
for i = 1, #entries, 2 do
  if tonumber(entries[i + 1]) >= now then
    live[job_of(entries[i])] = true
  else
    table.insert(expired, entries[i])
  end
end
local held = {}
for _, id in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do held[id] = (held[id] or 0) + 1 end
local requeued = {}
local function requeue(id)
  redis.call('LREM', KEYS[2], 1, id)
  held[id] = held[id] - 1
  redis.call('HDEL', KEYS[5], id)
  if redis.call('EXISTS', ARGV[3] .. id) == 1 then
    redis.call('LPUSH', KEYS[1], id)
    table.insert(requeued, id)
  end
end
for _, member in ipairs(expired) do
  redis.call('ZREM', KEYS[3], member)
  redis.call('ZREM', KEYS[4], member)
  local id = job_of(member)
  if not live[id] and (held[id] or 0) > 0 then requeue(id) end
end
for id, count in pairs(held) do
  if count > 0 and not live[id] then
    local first = redis.call('HGET', KEYS[5], id)
    if not first then
      redis.call('HSET', KEYS[5], id, ARGV[1])
    elseif now - tonumber(first) >= grace then
      requeue(id)
    end
  end
end
for _, id in ipairs(redis.call('HKEYS', KEYS[5])) do
  if (held[id] or 0) == 0 or live[id] then redis.call('HDEL', KEYS[5], id) end
end
return requeued
"""
