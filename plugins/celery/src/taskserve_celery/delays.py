"""Retries waiting out their backoff, kept in Redis instead of in a worker.

Celery delays a task (``countdown``/``eta``) by holding the message inside
the worker that fetched it: the worker raises its prefetch limit for every
such message, and on Redis a delay longer than the visibility timeout makes
the broker deliver the message a second time. Here a retry is a member of a
sorted set scored by the time it is due; the consumers of the queue publish
due retries again. Claiming is atomic, so each due retry is published by one
consumer; a consumer that dies after claiming leaves the claim to expire and
another one publishes it (at least once).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis

from taskserve.errors import TaskNotFound
from taskserve.serialization import TaskMessage

logger = logging.getLogger(__name__)

# KEYS: delayed set; ARGV: now, claim deadline, limit
_CLAIM_DUE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], ARGV[2], id) end
return ids
"""

# KEYS: delayed set; ARGV: id, claim deadline. Removes the entry only if it is
# still this claim: a retry scheduled again meanwhile (the published run failed
# fast) has a new score and stays.
_RELEASE_CLAIM = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) == tonumber(ARGV[2]) then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
"""

CLAIM_S = 30.0
"""How long a claimed retry waits for its publisher before another may take it."""

BATCH = 100
"""Most retries published per call."""


class DelayedRetries:
    """The retries of one queue that wait for their backoff to pass."""

    def __init__(self, client: redis.Redis, key: str) -> None:
        self._client = client
        self.key = key
        self._claim = client.register_script(_CLAIM_DUE)
        self._release = client.register_script(_RELEASE_CLAIM)

    def schedule(self, task_id: str, delay_s: float) -> None:
        """Make ``task_id`` due ``delay_s`` seconds from now."""
        self._client.zadd(self.key, {task_id: time.time() + delay_s})

    def count(self) -> int:
        """How many retries are waiting."""
        return int(self._client.zcard(self.key))

    def publish_due(
        self,
        load: Callable[[str], TaskMessage],
        publish: Callable[[TaskMessage], None],
    ) -> int:
        """Publish the retries that are due; return how many were published."""
        now = time.time()
        deadline = repr(now + CLAIM_S)
        claimed = self._claim(keys=[self.key], args=[now, deadline, BATCH])
        published = 0
        for raw_id in claimed:
            task_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
            try:
                message = load(task_id)
            except TaskNotFound:
                self._release(keys=[self.key], args=[task_id, deadline])
                continue
            publish(message)
            self._release(keys=[self.key], args=[task_id, deadline])
            published += 1
        return published

    def clear(self) -> None:
        """Forget every waiting retry (tests, purges)."""
        self._client.delete(self.key)
