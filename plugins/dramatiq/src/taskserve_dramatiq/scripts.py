"""Lua scripts giving a queue on Dramatiq's Redis broker ten priority levels.

Dramatiq keeps a queue in Redis as one list of message ids (``<ns>:<queue>``),
a hash of message bodies (``<ns>:<queue>.msgs``), and per consumer a set of
the ids it fetched and has not acknowledged yet
(``<ns>:__acks__.<broker id>.<queue>``). taskserve-dramatiq keeps the hash and
the sets as they are, and replaces the one list by ten, one per priority
level: Dramatiq's own list is level 0, and level ``n`` (1 to 9) is
``<ns>:<queue>@priority-<n>`` (``@`` never occurs in a Dramatiq queue name).
The Redis id of a message of level ``n`` ends with ``@priority-<n>``; an id
without that ending (level 0, or a message put there by plain Dramatiq) is
level 0. So a message's level is known wherever its id is, and every script
that puts an id back into a list puts it into the list of its own level.

Each script runs atomically on the server: a fetched id is in its consumer's
set in the same step it leaves its list, so no crash can lose it between
the two. The scripts that take the level lists take them as their last ten
KEYS, levels 0 to 9 in order. :data:`RECOVER` names keys it learns at run time
(the sets of dead consumers), as Dramatiq's own maintenance does: like
Dramatiq's broker, it needs one Redis server, not a cluster.
"""

from __future__ import annotations

_LEVELS = """
local LEVEL_0 = #KEYS - 9
local function level_list(id)
  local level = string.match(id, '@priority%-(%d)$')
  return KEYS[LEVEL_0 + (tonumber(level) or 0)]
end
"""

# KEYS: heartbeats, bodies, own fetched set, level lists 0..9
# ARGV: how many, now (ms), own broker id  ->  {id, body, id, body, ...}
# The fetch: up to ARGV[1] messages, the heads of the highest non-empty levels
# first, each moved into the consumer's set of fetched ids. An id whose body is
# gone (acknowledged through a duplicate meanwhile) is dropped from its list.
# The consumer heartbeats as Dramatiq's own commands do.
FETCH = """
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
local left = tonumber(ARGV[1])
local fetched = {}
local i = #KEYS
while left > 0 and i > 3 do
  local id = redis.call('LPOP', KEYS[i])
  if id then
    local body = redis.call('HGET', KEYS[2], id)
    if body then
      redis.call('SADD', KEYS[3], id)
      table.insert(fetched, id)
      table.insert(fetched, body)
      left = left - 1
    end
  else
    i = i - 1
  end
end
return fetched
"""

# KEYS: bodies, own fetched set, level lists 0..9;  ARGV: ids in the order fetched
# ->  how many went back
# Hand fetched messages back: each id still in the consumer's set (and whose
# body still exists) goes back to the head of its level's list, in the order
# it was fetched, since it was ahead of every message still waiting there.
REQUEUE = (
    _LEVELS
    + """
local back = 0
for i = #ARGV, 1, -1 do
  local id = ARGV[i]
  if redis.call('SREM', KEYS[2], id) == 1 and redis.call('HEXISTS', KEYS[1], id) == 1 then
    redis.call('LPUSH', level_list(id), id)
    back = back + 1
  end
end
return back
"""
)

# KEYS: heartbeats, bodies, level lists 0..9
# ARGV: now (ms), heartbeat timeout (ms), own broker id, fetched-set prefix
#       ('<ns>:__acks__.'), queue name  ->  how many messages went back
# Crash recovery for this queue: the consumer heartbeats, then the fetched ids
# of every consumer that has not heartbeaten for the timeout go back to the head
# of their level's list, and its set is deleted. Dramatiq's own maintenance of
# the delay queue, run right after, drops such consumers from the heartbeats
# once they hold no set.
RECOVER = (
    _LEVELS
    + """
local now = tonumber(ARGV[1])
redis.call('ZADD', KEYS[1], now, ARGV[3])
local recovered = 0
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
for _, consumer in ipairs(dead) do
  local fetched = ARGV[4] .. consumer .. '.' .. ARGV[5]
  for _, id in ipairs(redis.call('SMEMBERS', fetched)) do
    if redis.call('HEXISTS', KEYS[2], id) == 1 then
      redis.call('LPUSH', level_list(id), id)
      recovered = recovered + 1
    end
  end
  redis.call('DEL', fetched)
end
return recovered
"""
)
