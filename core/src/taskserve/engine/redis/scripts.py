"""Lua scripts of the Redis task store; each runs atomically on the server.

A terminal record (SUCCESS, FAILURE, CANCELLED) is never changed again; every
script checks that first. Keys of other records are built inside a script
from the task-key prefix it is given (single-instance Redis, no cluster).
"""

from __future__ import annotations

_COMMON = """
local function is_terminal(st)
  return st == 'SUCCESS' or st == 'FAILURE' or st == 'CANCELLED'
end
local function expire(task_key, ttl)
  redis.call('EXPIRE', task_key, ttl)
  local idem = redis.call('HGET', task_key, 'idem')
  if idem and idem ~= '' then redis.call('EXPIRE', idem, ttl) end
end
-- step entries of a queue's listing, from where the last sweep stopped,
-- lose those whose record is gone; returns how many
local function sweep_listing(listing, position, prefix, step)
  local at = tonumber(redis.call('GET', position) or '0')
  local swept = redis.call('ZRANGE', listing, at, at + step - 1)
  local gone = {}
  for _, id in ipairs(swept) do
    if redis.call('EXISTS', prefix .. id) == 0 then table.insert(gone, id) end
  end
  if #gone > 0 then redis.call('ZREM', listing, unpack(gone)) end
  if #swept < step then at = 0 else at = at + #swept - #gone end
  redis.call('SET', position, at)
  return #gone
end
local function new_record(task_key, id, queue, name, payload, now, retried_from)
  redis.call('HSET', task_key, 'id', id, 'queue', queue, 'name', name,
    'payload', payload, 'status', 'PENDING', 'attempts', 0,
    'created_at', now, 'updated_at', now, 'retried_from', retried_from)
end
-- the outbox entry of webhook event `event` of the task, if it asked for that
-- event (an entry of the same id is kept); due at `due` (default: now). Its id
-- is evt_<task id>_<event>, with _<number> when a number is given.
local function webhook_event(task_key, event, attempt, data, now, outbox, entry_prefix, number, due)
  local url = redis.call('HGET', task_key, 'webhook_url')
  if not url or url == '' then return end
  local events = redis.call('HGET', task_key, 'webhook_events') or ''
  if not string.find(events, ',' .. event .. ',', 1, true) then return end
  local task_id = redis.call('HGET', task_key, 'id')
  local id = 'evt_' .. task_id .. '_' .. event
  if number then id = id .. '_' .. number end
  local key = entry_prefix .. id
  if redis.call('EXISTS', key) == 1 then return end
  redis.call('HSET', key, 'id', id, 'task_id', task_id,
    'task_name', redis.call('HGET', task_key, 'name') or '', 'event', event, 'url', url,
    'attempt', attempt, 'data', data or '', 'created_at', now, 'deliveries', 0, 'owner', '')
  redis.call('ZADD', outbox, due or now, id)
end
"""

SWEEP_STEP = 3
"""Entries of a queue's listing (``tasks``) each new task's script checks for
records that are gone (expired), walking the listing oldest first and starting
over at its end. Each insert adds one entry and the walk passes ``SWEEP_STEP``,
so it goes round in about ``N / (SWEEP_STEP - 1)`` inserts for ``N`` entries,
and at most that many records can have expired behind it meanwhile: the
listing holds at most about ``(SWEEP_STEP - 1) / (SWEEP_STEP - 2)`` (twice)
as many entries as the queue has live records, even if it is never read."""

# KEYS: task, idempotency ('' = none), waiting, seq, scheduled, tasks (the
#       queue's listing), tasks-sweep (where the listing's sweep is)
# ARGV: id, queue, name, payload, now, retried_from, task key prefix,
#       due ('' = publish now), webhook url ('' = none), webhook events
# -> {id, seq}: seq 0 = the idempotency key's existing task; id '' = id in use;
# with a due time the task waits in scheduled (not published) and seq is -1.
# A new task enters the listing at its creation time, and SWEEP_STEP entries of
# the listing, from where the last sweep stopped, lose those whose record is gone.
CREATE = (
    _COMMON
    + """
if KEYS[2] ~= '' then
  local existing = redis.call('GET', KEYS[2])
  if existing then
    if redis.call('EXISTS', ARGV[7] .. existing) == 1 then return {existing, 0} end
    redis.call('DEL', KEYS[2])  -- its task expired: the key is free again
  end
end
if redis.call('EXISTS', KEYS[1]) == 1 then return {'', 0} end
new_record(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6])
if ARGV[9] ~= '' then
  redis.call('HSET', KEYS[1], 'webhook_url', ARGV[9], 'webhook_events', ARGV[10])
end
redis.call('ZADD', KEYS[6], ARGV[5], ARGV[1])
sweep_listing(KEYS[6], KEYS[7], ARGV[7], """
    + str(SWEEP_STEP)
    + """)
if ARGV[8] ~= '' then
  redis.call('HSET', KEYS[1], 'publishes', 0, 'idem', KEYS[2], 'due', ARGV[8])
  if KEYS[2] ~= '' then redis.call('SET', KEYS[2], ARGV[1]) end
  redis.call('ZADD', KEYS[5], ARGV[8], ARGV[1])
  return {ARGV[1], -1}
end
local seq = redis.call('INCR', KEYS[4])
redis.call('HSET', KEYS[1], 'seq', seq, 'publishes', 1, 'idem', KEYS[2])
if KEYS[2] ~= '' then redis.call('SET', KEYS[2], ARGV[1]) end
redis.call('ZADD', KEYS[3], seq, ARGV[1])
return {ARGV[1], seq}
"""
)

# KEYS: task, running, waiting, seen, tasks (the queue's listing), webhook outbox
# ARGV: id, queue, name, payload, now, lease deadline, max attempts, ttl, owner, seq ('' = none),
#       webhook entry prefix
# -> {attempt, started, running elsewhere, lease deadline}
BEGIN = (
    _COMMON
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then
  new_record(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], '')
  redis.call('ZADD', KEYS[5], ARGV[5], ARGV[1])
end
if ARGV[10] ~= '' then
  local seen = tonumber(redis.call('GET', KEYS[4]) or '0')
  if tonumber(ARGV[10]) > seen then redis.call('SET', KEYS[4], ARGV[10]) end
end
local st = redis.call('HGET', KEYS[1], 'status')
if is_terminal(st) then
  redis.call('ZREM', KEYS[3], ARGV[1])
  return {0, 0, 0, ''}
end
if st == 'STARTED' then
  local deadline = redis.call('ZSCORE', KEYS[2], ARGV[1])
  if deadline and tonumber(deadline) > tonumber(ARGV[5]) then return {0, 0, 1, deadline} end
end
redis.call('ZREM', KEYS[3], ARGV[1])
local n = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
if n > tonumber(ARGV[7]) then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return {n, 0, 0, ''}
end
if redis.call('HGET', KEYS[1], 'cancel_requested') == '1' then
  webhook_event(KEYS[1], 'cancelled', n, false, ARGV[5], KEYS[6], ARGV[11])
  redis.call('HSET', KEYS[1], 'status', 'CANCELLED', 'updated_at', ARGV[5])
  redis.call('ZREM', KEYS[2], ARGV[1])
  expire(KEYS[1], ARGV[8])
  return {n, 0, 0, ''}
end
webhook_event(KEYS[1], 'started', n, false, ARGV[5], KEYS[6], ARGV[11], n)
redis.call('HSET', KEYS[1], 'status', 'STARTED', 'updated_at', ARGV[5], 'owner', ARGV[9])
redis.call('ZADD', KEYS[2], ARGV[6], ARGV[1])
return {n, 1, 0, ''}
"""
)

# KEYS: task, running, waiting, scheduled, dlq order, dlq records, webhook outbox
# ARGV: id, status, now, ttl, result ('' = none), error ('' = none),
#       dlq id ('' = none), dlq json, attempts ('' = keep), webhook entry prefix,
#       the event's data (a succeeded or failed event), the dead-lettered event's data
FINISH = (
    _COMMON
    + """
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
local st = redis.call('HGET', KEYS[1], 'status')
if not st or is_terminal(st) then return 0 end
-- A cancel accepted while the task ran wins over the run's outcome (SPEC 5.2).
local attempt = ARGV[9]
if attempt == '' then attempt = redis.call('HGET', KEYS[1], 'attempts') or 0 end
if redis.call('HGET', KEYS[1], 'cancel_requested') == '1' then
  webhook_event(KEYS[1], 'cancelled', attempt, false, ARGV[3], KEYS[7], ARGV[10])
  redis.call('HSET', KEYS[1], 'status', 'CANCELLED', 'updated_at', ARGV[3])
  expire(KEYS[1], ARGV[4])
  return 1
end
-- The dead letter and the webhook events first: a script stopped by an error
-- keeps its earlier writes, so a failed write must leave the status untouched.
if ARGV[7] ~= '' then
  redis.call('HSET', KEYS[6], ARGV[7], ARGV[8])
  redis.call('ZADD', KEYS[5], ARGV[3], ARGV[7])
end
if ARGV[2] == 'SUCCESS' then
  webhook_event(KEYS[1], 'succeeded', attempt, ARGV[11], ARGV[3], KEYS[7], ARGV[10])
elseif ARGV[2] == 'FAILURE' then
  webhook_event(KEYS[1], 'failed', attempt, ARGV[11], ARGV[3], KEYS[7], ARGV[10])
  if ARGV[7] ~= '' then
    webhook_event(KEYS[1], 'dead_lettered', attempt, ARGV[12], ARGV[3], KEYS[7], ARGV[10])
  end
else
  webhook_event(KEYS[1], 'cancelled', attempt, false, ARGV[3], KEYS[7], ARGV[10])
end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'updated_at', ARGV[3])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'result', ARGV[5]) end
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[6]) end
if ARGV[9] ~= '' then redis.call('HSET', KEYS[1], 'attempts', ARGV[9]) end
expire(KEYS[1], ARGV[4])
return 1
"""
)

# KEYS: task, running, scheduled, webhook outbox
# ARGV: id, now, error, ttl, due, webhook entry prefix
RETRY = (
    _COMMON
    + """
redis.call('ZREM', KEYS[2], ARGV[1])
local st = redis.call('HGET', KEYS[1], 'status')
if not st or is_terminal(st) then return 0 end
-- A cancel accepted while the task ran wins over the run's outcome (SPEC 5.2).
if redis.call('HGET', KEYS[1], 'cancel_requested') == '1' then
  webhook_event(KEYS[1], 'cancelled', redis.call('HGET', KEYS[1], 'attempts') or 0, false,
    ARGV[2], KEYS[4], ARGV[6])
  redis.call('HSET', KEYS[1], 'status', 'CANCELLED', 'updated_at', ARGV[2])
  expire(KEYS[1], ARGV[4])
  return 1
end
redis.call('HSET', KEYS[1], 'status', 'RETRY', 'updated_at', ARGV[2], 'error', ARGV[3],
  'owner', '', 'unrecorded', 0, 'due', ARGV[5])
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[1])
return 1
"""
)

# KEYS: task, running, scheduled; ARGV: id, owner, uncount (1/0), now, due,
# count the outcome as unrecorded (1/0)  -> consecutive unrecorded outcomes, or -1
RELEASE = """
if redis.call('HGET', KEYS[1], 'status') ~= 'STARTED' then return -1 end
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[2] then return -1 end
redis.call('ZREM', KEYS[2], ARGV[1])
if ARGV[3] == '1' then redis.call('HINCRBY', KEYS[1], 'attempts', -1) end
redis.call('HSET', KEYS[1], 'status', 'PENDING', 'owner', '', 'updated_at', ARGV[4],
  'due', ARGV[5])
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[1])
if ARGV[6] == '1' then return redis.call('HINCRBY', KEYS[1], 'unrecorded', 1) end
return 0
"""

# KEYS: task, running, waiting, scheduled, webhook outbox
# ARGV: id, now, ttl, webhook entry prefix  ->  {changed, status}
CANCEL = (
    _COMMON
    + """
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return {-1, ''} end
if st == 'PENDING' or st == 'RETRY' then
  webhook_event(KEYS[1], 'cancelled', redis.call('HGET', KEYS[1], 'attempts') or 0, false,
    ARGV[2], KEYS[5], ARGV[4])
  redis.call('HSET', KEYS[1], 'status', 'CANCELLED', 'updated_at', ARGV[2])
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('ZREM', KEYS[4], ARGV[1])
  expire(KEYS[1], ARGV[3])
  return {1, 'CANCELLED'}
end
if st == 'STARTED' then
  redis.call('HSET', KEYS[1], 'cancel_requested', '1', 'updated_at', ARGV[2])
  return {1, 'STARTED'}
end
return {0, st}
"""
)

# KEYS: waiting, scheduled, running, seq, seen, samples, republished, lock
# ARGV: now, claim bound, engine empty (1/0), limit, task key prefix, lock token,
#       lock ms, lease grace
# -> {id, seq, reason, id, seq, reason, ...}: the tasks to publish now, each with
# the publish sequence number its message must carry. Reasons: 'due' (a retry
# or delayed task whose time came), 'lease' (its consumer stopped renewing the
# lease), 'lost' (its message was not claimed although later ones were, or the
# engine's queue is empty).
RECONCILE = """
if not redis.call('SET', KEYS[8], ARGV[6], 'NX', 'PX', ARGV[7]) then return {} end
local now = tonumber(ARGV[1])
local bound = tonumber(ARGV[2])
local limit = tonumber(ARGV[4])
local seq_now = tonumber(redis.call('GET', KEYS[4]) or '0')
local seen_now = tonumber(redis.call('GET', KEYS[5]) or '0')
redis.call('LPUSH', KEYS[6], ARGV[1] .. ':' .. seen_now .. ':' .. seq_now)
redis.call('LTRIM', KEYS[6], 0, 127)
local seen_then, seq_then = -1, -1
for _, sample in ipairs(redis.call('LRANGE', KEYS[6], 0, -1)) do
  local t, se, sq = string.match(sample, '^([^:]+):([^:]+):([^:]+)$')
  if tonumber(t) <= now - bound then
    seen_then, seq_then = tonumber(se), tonumber(sq)
    break
  end
end
local out = {}
local function publish(id, reason)
  local key = ARGV[5] .. id
  local seq = redis.call('INCR', KEYS[4])
  redis.call('HSET', key, 'seq', seq)
  redis.call('HINCRBY', key, 'publishes', 1)
  redis.call('ZADD', KEYS[1], seq, id)
  table.insert(out, id)
  table.insert(out, seq)
  table.insert(out, reason)
end
local function status(id)
  return redis.call('HGET', ARGV[5] .. id, 'status')
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf',
    now - tonumber(ARGV[8]), 'LIMIT', 0, limit)) do
  redis.call('ZREM', KEYS[3], id)
  if status(id) == 'STARTED' then
    publish(id, 'lease')
    redis.call('HINCRBY', KEYS[7], 'lease', 1)
  end
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, limit)) do
  redis.call('ZREM', KEYS[2], id)
  local st = status(id)
  if st == 'PENDING' or st == 'RETRY' then publish(id, 'due') end
end
local passed = seen_then
if ARGV[3] == '1' and seq_then > passed then passed = seq_then end
if passed > 0 then
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', passed,
      'LIMIT', 0, limit)) do
    redis.call('ZREM', KEYS[1], id)
    local st = status(id)
    -- STARTED without a lease: handed out for its lease and never claimed (the
    -- publish failed, or the consumer that got it died before publishing).
    if st == 'PENDING' or st == 'RETRY'
        or (st == 'STARTED' and not redis.call('ZSCORE', KEYS[3], id)) then
      publish(id, 'lost')
      redis.call('HINCRBY', KEYS[7], 'lost', 1)
    end
  end
end
return out
"""

# KEYS: task, waiting, tasks (the queue's listing)
# ARGV: id
# -> 1 when the record was deleted
DISCARD = """
local idem = redis.call('HGET', KEYS[1], 'idem')
if idem and idem ~= '' and redis.call('GET', idem) == ARGV[1] then redis.call('DEL', idem) end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return redis.call('DEL', KEYS[1])
"""

LIST_FIELDS = (
    "status",
    "created_at",
    "updated_at",
    "name",
    "queue",
    "result",
    "error",
    "attempts",
    "retried_from",
    "progress",
    "due",
)
"""The fields of a task record :data:`LIST` returns, in its order."""

# KEYS: tasks (the queue's listing)
# ARGV: task key prefix, highest score ('+inf' or '(<time>': strictly before),
#       after id ('' = none: start at the highest score), most entries to read,
#       most records to return, wanted states (',PENDING,RETRY,'; '' = any)
# -> {last id kept ('' = none), its score, entries fetched, {id, fields...}, ...}
# Reads the listing newest first (ties: the larger id first), from the entry after
# ``after id`` (by rank; from the highest score when that entry is gone), and
# returns the records in a wanted state, with the fields of LIST_FIELDS. An entry
# whose record is gone (expired, deleted) leaves the listing.
LIST = (
    """
local entries
if ARGV[3] ~= '' then
  local rank = redis.call('ZREVRANK', KEYS[1], ARGV[3])
  if rank then
    entries = redis.call('ZREVRANGE', KEYS[1], rank + 1, rank + tonumber(ARGV[4]), 'WITHSCORES')
  end
end
if not entries then
  entries = redis.call('ZREVRANGEBYSCORE', KEYS[1], ARGV[2], '-inf', 'WITHSCORES',
    'LIMIT', 0, tonumber(ARGV[4]))
end
local out = {'', '', #entries / 2}
local found, most = 0, tonumber(ARGV[5])
local gone = {}
for i = 1, #entries, 2 do
  local id = entries[i]
  local status = redis.call('HGET', ARGV[1] .. id, 'status')
  if not status then
    table.insert(gone, id)
  else
    out[1], out[2] = id, entries[i + 1]
    if ARGV[6] == '' or string.find(ARGV[6], ',' .. status .. ',', 1, true) then
      -- The whole record only for a wanted task: a result can be large.
      local record = redis.call('HMGET', ARGV[1] .. id, '"""
    + "', '".join(LIST_FIELDS)
    + """')
      table.insert(out, {id, unpack(record)})
      found = found + 1
      if found >= most then break end
    end
  end
end
if #gone > 0 then redis.call('ZREM', KEYS[1], unpack(gone)) end
return out
"""
)

# KEYS: task, webhook outbox
# ARGV: owner, progress json, now, the progress event's data, webhook entry prefix,
#       progress event interval
# -> 1 when written: the task is STARTED under this owner's lease (else nothing, 0).
# A task that asked for progress events gets one: the report coalesces into its
# last progress entry while that one was never tried, else it makes the next
# (number webhook_progress + 1), due one interval after the last at the earliest.
PROGRESS = (
    _COMMON
    + """
if redis.call('HGET', KEYS[1], 'status') ~= 'STARTED' then return 0 end
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
local events = redis.call('HGET', KEYS[1], 'webhook_events') or ''
if string.find(events, ',progress,', 1, true) then
  local attempt = redis.call('HGET', KEYS[1], 'attempts') or 0
  local count = tonumber(redis.call('HGET', KEYS[1], 'webhook_progress') or '0')
  local last = ARGV[5] .. 'evt_' .. redis.call('HGET', KEYS[1], 'id') .. '_progress_' .. count
  if count > 0 and redis.call('HGET', last, 'deliveries') == '0' then
    redis.call('HSET', last, 'data', ARGV[4], 'attempt', attempt, 'created_at', ARGV[3])
  else
    local now, interval = tonumber(ARGV[3]), tonumber(ARGV[6])
    local at = tonumber(redis.call('HGET', KEYS[1], 'webhook_progress_at') or '')
    local due = now
    if at and at + interval > now then due = at + interval end
    count = redis.call('HINCRBY', KEYS[1], 'webhook_progress', 1)
    redis.call('HSET', KEYS[1], 'webhook_progress_at', due)
    webhook_event(KEYS[1], 'progress', attempt, ARGV[4], ARGV[3], KEYS[2], ARGV[5], count, due)
  end
end
redis.call('HSET', KEYS[1], 'progress', ARGV[2])
return 1
"""
)


PURGE_SWEEP_STEP = 500
"""Entries of a queue's listing one :data:`SWEEP` call checks."""

# KEYS: tasks (the queue's listing), tasks-sweep;  ARGV: task key prefix, step
# -> how many entries were removed. The listing's sweep without a new task: a
# queue that gets no more tasks still loses the entries of expired records.
SWEEP = (
    _COMMON
    + """
return sweep_listing(KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2]))
"""
)


WEBHOOK_FIELDS = (
    "id",
    "task_id",
    "task_name",
    "event",
    "url",
    "attempt",
    "data",
    "created_at",
    "deliveries",
)
"""The fields of a webhook outbox entry :data:`CLAIM_WEBHOOKS` returns, in its order."""

# KEYS: webhook outbox (zset: event ids by due time)
# ARGV: now, lease deadline, owner, most entries, webhook entry prefix
# -> {{fields of WEBHOOK_FIELDS}, ...}: the due entries, each leased to owner until the
# deadline with its tries counted; an id whose entry is gone leaves the outbox.
CLAIM_WEBHOOKS = (
    """
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0,
    tonumber(ARGV[4]))) do
  local key = ARGV[5] .. id
  if redis.call('EXISTS', key) == 0 then
    redis.call('ZREM', KEYS[1], id)
  else
    redis.call('ZADD', KEYS[1], ARGV[2], id)
    redis.call('HINCRBY', key, 'deliveries', 1)
    redis.call('HSET', key, 'owner', ARGV[3])
    table.insert(out, redis.call('HMGET', key, '"""
    + "', '".join(WEBHOOK_FIELDS)
    + """'))
  end
end
return out
"""
)

# KEYS: webhook outbox, entry; ARGV: id, owner, due, error
# -> 1 when rescheduled (the entry is still leased by owner), else 0
RETRY_WEBHOOK = """
if redis.call('HGET', KEYS[2], 'owner') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[2], 'owner', '', 'last_error', ARGV[4])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
"""
