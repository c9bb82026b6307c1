"""Lua scripts of the Redis state store; each runs atomically on the server.

Status strings: a terminal record (SUCCESS, FAILURE, CANCELLED) is never
changed again; every script checks that first.
"""

from __future__ import annotations

IS_TERMINAL = """
local function is_terminal(st)
  return st == 'SUCCESS' or st == 'FAILURE' or st == 'CANCELLED'
end
"""

# KEYS: task, idempotency (or ''), ARGV: id, queue, name, payload, now, retried_from
CREATE = """
if KEYS[2] ~= '' then
  local existing = redis.call('GET', KEYS[2])
  if existing then return existing end
end
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'queue', ARGV[2], 'name', ARGV[3],
  'payload', ARGV[4], 'status', 'PENDING', 'attempts', 0, 'deliveries', 0,
  'created_at', ARGV[5], 'updated_at', ARGV[5], 'retried_from', ARGV[6])
if KEYS[2] ~= '' then redis.call('SET', KEYS[2], ARGV[1]) end
return ARGV[1]
"""

# KEYS: task; ARGV: id, queue, name, payload, now
BEGIN_DELIVERY = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'id', ARGV[1], 'queue', ARGV[2], 'name', ARGV[3],
    'payload', ARGV[4], 'status', 'PENDING', 'attempts', 0, 'deliveries', 0,
    'created_at', ARGV[5], 'updated_at', ARGV[5], 'retried_from', '')
end
return redis.call('HINCRBY', KEYS[1], 'deliveries', 1)
"""

# KEYS: task, running; ARGV: id, queue, name, payload, now, lease_deadline, max_attempts, ttl
# -> {delivery number, 1 if STARTED was set}: BEGIN_DELIVERY and START in one step,
# starting only a delivery within the attempt budget.
BEGIN_AND_START = (
    IS_TERMINAL
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'id', ARGV[1], 'queue', ARGV[2], 'name', ARGV[3],
    'payload', ARGV[4], 'status', 'PENDING', 'attempts', 0, 'deliveries', 0,
    'created_at', ARGV[5], 'updated_at', ARGV[5], 'retried_from', '')
end
local n = redis.call('HINCRBY', KEYS[1], 'deliveries', 1)
if n > tonumber(ARGV[7]) then return {n, 0} end
local st = redis.call('HGET', KEYS[1], 'status')
if is_terminal(st) then return {n, 0} end
if redis.call('HGET', KEYS[1], 'cancel_requested') == '1' then
  redis.call('HSET', KEYS[1], 'status', 'CANCELLED', 'updated_at', ARGV[5])
  redis.call('EXPIRE', KEYS[1], ARGV[8])
  redis.call('ZREM', KEYS[2], ARGV[1])
  return {n, 0}
end
redis.call('HSET', KEYS[1], 'status', 'STARTED', 'updated_at', ARGV[5], 'attempts', n)
redis.call('ZADD', KEYS[2], ARGV[6], ARGV[1])
return {n, 1}
"""
)

# KEYS: task, running; ARGV: id, now, lease_deadline, attempt, ttl
START = (
    IS_TERMINAL
    + """
local st = redis.call('HGET', KEYS[1], 'status')
if not st or is_terminal(st) then return 0 end
if redis.call('HGET', KEYS[1], 'cancel_requested') == '1' then
  redis.call('HSET', KEYS[1], 'status', 'CANCELLED', 'updated_at', ARGV[2])
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 0
end
redis.call('HSET', KEYS[1], 'status', 'STARTED', 'updated_at', ARGV[2], 'attempts', ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return 1
"""
)

# KEYS: task, running, dlq_order, dlq_records
# ARGV: id, status, now, ttl, result ('' = none), error ('' = none), dlq_id ('' = none), dlq_json
FINISH = (
    IS_TERMINAL
    + """
redis.call('ZREM', KEYS[2], ARGV[1])
local st = redis.call('HGET', KEYS[1], 'status')
if st and is_terminal(st) then return 0 end
-- A cancel accepted while the task ran wins over the run's outcome (SPEC 5.2).
if redis.call('HGET', KEYS[1], 'cancel_requested') == '1' then
  redis.call('HSET', KEYS[1], 'status', 'CANCELLED', 'updated_at', ARGV[3])
  redis.call('EXPIRE', KEYS[1], ARGV[4])
  return 1
end
-- The dead letter first: a script stopped by an error keeps its earlier writes,
-- so a failed dead-letter write must leave the status untouched.
if ARGV[7] ~= '' then
  redis.call('HSET', KEYS[4], ARGV[7], ARGV[8])
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[7])
end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'updated_at', ARGV[3])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'result', ARGV[5]) end
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[6]) end
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""
)

# KEYS: task, running; ARGV: id, now, error, ttl
RETRY = (
    IS_TERMINAL
    + """
redis.call('ZREM', KEYS[2], ARGV[1])
local st = redis.call('HGET', KEYS[1], 'status')
if not st or is_terminal(st) then return 0 end
-- A cancel accepted while the task ran wins over the run's outcome (SPEC 5.2).
if redis.call('HGET', KEYS[1], 'cancel_requested') == '1' then
  redis.call('HSET', KEYS[1], 'status', 'CANCELLED', 'updated_at', ARGV[2])
  redis.call('EXPIRE', KEYS[1], ARGV[4])
  return 1
end
redis.call('HSET', KEYS[1], 'status', 'RETRY', 'updated_at', ARGV[2], 'error', ARGV[3])
return 1
"""
)

# KEYS: task, running; ARGV: id, now, ttl  ->  {changed, status}
CANCEL = (
    IS_TERMINAL
    + """
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return {-1, ''} end
if st == 'PENDING' or st == 'RETRY' then
  redis.call('HSET', KEYS[1], 'status', 'CANCELLED', 'updated_at', ARGV[2])
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  redis.call('ZREM', KEYS[2], ARGV[1])
  return {1, 'CANCELLED'}
end
if st == 'STARTED' then
  redis.call('HSET', KEYS[1], 'cancel_requested', '1', 'updated_at', ARGV[2])
  return {1, 'STARTED'}
end
return {0, st}
"""
)

# KEYS: task, running; ARGV: id  -- hand a started task back (its run did not count)
RELEASE = """
redis.call('ZREM', KEYS[2], ARGV[1])
if redis.call('HGET', KEYS[1], 'status') == 'STARTED' then
  redis.call('HINCRBY', KEYS[1], 'deliveries', -1)
  return 1
end
return 0
"""
