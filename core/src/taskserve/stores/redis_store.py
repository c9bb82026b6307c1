"""Task records, cancel requests, leases and dead letters in Redis.

Engines such as Celery, Dramatiq and RQ move messages well but disagree on
status, cancellation and dead letters. Adapters built on them keep those in
a :class:`RedisTaskStore` instead, so every adapter keeps the same promises:
status moves forward only (a Lua check on every write), a cancel is a durable
record consulted before a task starts, a dead letter is written in the same
atomic step as the FAILURE status, and finished records expire after the
result TTL.

Keys (``prefix`` defaults to ``taskserve``)::

    {prefix}:task:{id}                 hash: the task record and its message
    {prefix}:idem:{queue}:{key}        string: task id of an idempotency key
    {prefix}:running:{queue}           zset: running task ids by lease deadline
    {prefix}:dlq:{name}:order          zset: dead-letter ids by time
    {prefix}:dlq:{name}:records        hash: dead-letter id -> JSON record

Requires the ``redis`` package (``pip install taskserve[redis]``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from typing import Any

from taskserve.errors import BrokerUnavailable, TaskNotFound
from taskserve.execution import DeliveryRecorder, TaskRunner
from taskserve.models import DeadLetter, TaskError, TaskResult
from taskserve.secrets import redact_url
from taskserve.serialization import TaskMessage
from taskserve.states import TaskState
from taskserve.stores import _redis_scripts as scripts

try:
    import redis
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "taskserve.stores.redis_store needs the 'redis' package: pip install 'taskserve[redis]'"
    ) from e


def _text(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else value


class RedisTaskStore:
    """The state of one queue's tasks, kept in Redis."""

    def __init__(
        self,
        url: str,
        queue_name: str,
        *,
        result_ttl_s: float,
        prefix: str = "taskserve",
        client: redis.Redis | None = None,
    ) -> None:
        self.url = url
        self.queue_name = queue_name
        self.result_ttl_s = result_ttl_s
        self.prefix = prefix
        self.client: redis.Redis = client or redis.Redis.from_url(
            url, socket_connect_timeout=5, socket_timeout=30, health_check_interval=30
        )
        self._running_key = f"{prefix}:running:{queue_name}"
        self._create = self.client.register_script(scripts.CREATE)
        self._begin = self.client.register_script(scripts.BEGIN_DELIVERY)
        self._begin_and_start = self.client.register_script(scripts.BEGIN_AND_START)
        self._start = self.client.register_script(scripts.START)
        self._finish = self.client.register_script(scripts.FINISH)
        self._retry = self.client.register_script(scripts.RETRY)
        self._cancel = self.client.register_script(scripts.CANCEL)
        self._release = self.client.register_script(scripts.RELEASE)

    # -- keys --------------------------------------------------------------
    def task_key(self, task_id: str) -> str:
        """Key of a task's record."""
        return f"{self.prefix}:task:{task_id}"

    def dead_letter_keys(self, queue: str) -> tuple[str, str]:
        """Keys of dead-letter queue ``queue``: (order zset, records hash)."""
        return f"{self.prefix}:dlq:{queue}:order", f"{self.prefix}:dlq:{queue}:records"

    @property
    def _ttl(self) -> int:
        return max(int(self.result_ttl_s + 0.999), 1)

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except redis.ConnectionError as e:
            raise BrokerUnavailable(f"cannot reach Redis at {redact_url(self.url)}: {e}") from e

    def ping(self) -> None:
        """Raise BrokerUnavailable unless Redis answers."""
        self._call(self.client.ping)

    def close(self) -> None:
        """Close the connection pool."""
        self.client.close()

    # -- producer ------------------------------------------------------------
    def create(self, message: TaskMessage, idempotency_key: str | None) -> tuple[TaskResult, bool]:
        """Store a PENDING record; return it and whether it is new.

        With an idempotency key already used on this queue, return that task
        and False: the caller must not publish anything.
        """
        idem_key = (
            f"{self.prefix}:idem:{self.queue_name}:{idempotency_key}" if idempotency_key else ""
        )
        task_id = self._call(
            self._create,
            keys=[self.task_key(message.id), idem_key],
            args=[
                message.id,
                message.queue_name,
                message.name,
                message.to_bytes(),
                message.enqueued_at,
                message.retried_from or "",
            ],
        )
        if task_id is None:
            raise ValueError(f"task id '{message.id}' is already in use")
        task_id = _text(task_id)
        if task_id != message.id:
            return self.status(str(task_id)), False
        return (
            TaskResult(
                id=message.id,
                status=TaskState.PENDING,
                created_at=message.enqueued_at,
                name=message.name,
                queue_name=message.queue_name,
                updated_at=message.enqueued_at,
                retried_from=message.retried_from,
            ),
            True,
        )

    def discard(self, task_id: str) -> None:
        """Delete a record whose message could not be published."""
        self._call(self.client.delete, self.task_key(task_id))

    def _record(self, task_id: str) -> dict[str, str]:
        raw = self._call(self.client.hgetall, self.task_key(task_id))
        if not raw:
            raise TaskNotFound(task_id)
        return {str(_text(k)): str(_text(v)) for k, v in raw.items() if k != b"payload"} | (
            {"payload": raw[b"payload"]} if b"payload" in raw else {}
        )

    def status(self, task_id: str) -> TaskResult:
        """The task's record; TaskNotFound when unknown or expired."""
        record = self._record(task_id)
        return TaskResult(
            id=task_id,
            status=TaskState(record["status"]),
            created_at=float(record["created_at"]),
            updated_at=float(record["updated_at"]),
            name=record.get("name"),
            queue_name=record.get("queue"),
            result=json.loads(record["result"]) if "result" in record else None,
            error=TaskError.model_validate_json(record["error"]) if "error" in record else None,
            attempts=int(record.get("attempts", 0)),
            retried_from=record.get("retried_from") or None,
        )

    def message(self, task_id: str) -> TaskMessage:
        """The task's message as enqueued; TaskNotFound when unknown or expired."""
        payload = self._call(self.client.hget, self.task_key(task_id), "payload")
        if payload is None:
            raise TaskNotFound(task_id)
        return TaskMessage.from_bytes(payload)

    def cancel(self, task_id: str) -> tuple[bool, TaskState]:
        """Cancel: queued tasks at once, running ones by request (see SPEC §5).

        Returns (changed, status after the call); TaskNotFound if unknown.
        """
        changed, status = self._call(
            self._cancel,
            keys=[self.task_key(task_id), self._running_key],
            args=[task_id, time.time(), self._ttl],
        )
        if int(changed) < 0:
            raise TaskNotFound(task_id)
        return bool(int(changed)), TaskState(str(_text(status)))

    # -- consumer ------------------------------------------------------------
    def begin_delivery(self, message: TaskMessage) -> int:
        """Count a delivery of ``message``; return its 1-based number.

        Crashed deliveries count too, so a task that kills its consumer every
        time exhausts its attempt budget. A message published without a
        record (by the raw engine API) gets one here.
        """
        return int(
            self._call(
                self._begin,
                keys=[self.task_key(message.id)],
                args=[
                    message.id,
                    message.queue_name,
                    message.name,
                    message.to_bytes(),
                    time.time(),
                ],
            )
        )

    def begin_and_start(
        self, message: TaskMessage, lease_s: float, max_attempts: int
    ) -> tuple[int, bool]:
        """:meth:`begin_delivery` and :meth:`start` in one atomic step (one round
        trip): count the delivery, then set STARTED unless the count exceeds
        ``max_attempts`` or the task is finished or cancelled. Returns the
        delivery's number and whether it was started."""
        now = time.time()
        number, started = self._call(
            self._begin_and_start,
            keys=[self.task_key(message.id), self._running_key],
            args=[
                message.id,
                message.queue_name,
                message.name,
                message.to_bytes(),
                now,
                now + lease_s,
                max_attempts,
                self._ttl,
            ],
        )
        return int(number), bool(int(started))

    def release(self, task_id: str) -> None:
        """Undo the count of a delivery whose outcome could not be recorded."""
        self._call(self._release, keys=[self.task_key(task_id), self._running_key], args=[task_id])

    def start(self, task_id: str, attempt: int, lease_s: float) -> bool:
        """Set STARTED unless the task is finished or cancelled (then False)."""
        now = time.time()
        return bool(
            self._call(
                self._start,
                keys=[self.task_key(task_id), self._running_key],
                args=[task_id, now, now + lease_s, attempt, self._ttl],
            )
        )

    def finish(
        self,
        task_id: str,
        status: TaskState,
        *,
        result: Any = None,
        has_result: bool = False,
        error: TaskError | None = None,
        dead_letter: DeadLetter | None = None,
    ) -> bool:
        """Move to terminal ``status`` unless already terminal; write
        ``dead_letter`` in the same atomic step. A cancel requested while the
        task ran makes it CANCELLED instead (no dead letter). Returns whether
        it changed."""
        order_key, records_key = self.dead_letter_keys(
            dead_letter.queue_name if dead_letter else "-"
        )
        return bool(
            self._call(
                self._finish,
                keys=[self.task_key(task_id), self._running_key, order_key, records_key],
                args=[
                    task_id,
                    status.value,
                    time.time(),
                    self._ttl,
                    json.dumps(result) if has_result else "",
                    error.model_dump_json() if error else "",
                    dead_letter.id if dead_letter else "",
                    dead_letter.model_dump_json() if dead_letter else "",
                ],
            )
        )

    def schedule_retry(self, task_id: str, error: TaskError) -> None:
        """Set RETRY (the caller publishes the next delivery), or CANCELLED when a
        cancel was requested while the attempt ran."""
        self._call(
            self._retry,
            keys=[self.task_key(task_id), self._running_key],
            args=[task_id, time.time(), error.model_dump_json(), self._ttl],
        )

    def extend_leases(self, task_ids: list[str], lease_s: float) -> None:
        """Push the lease deadline of running tasks ``lease_s`` ahead."""
        if task_ids:
            deadline = time.time() + lease_s
            self._call(
                self.client.zadd, self._running_key, dict.fromkeys(task_ids, deadline), xx=True
            )

    def cancel_requested(self, task_ids: list[str]) -> list[str]:
        """Which of ``task_ids`` have a cancel request."""
        if not task_ids:
            return []
        pipe = self.client.pipeline(transaction=False)
        for task_id in task_ids:
            pipe.hget(self.task_key(task_id), "cancel_requested")
        flags = self._call(pipe.execute)
        return [tid for tid, flag in zip(task_ids, flags, strict=True) if flag == b"1"]

    def in_flight(self) -> int:
        """Tasks running with a live lease."""
        return int(self._call(self.client.zcount, self._running_key, time.time(), "+inf"))

    def expired_leases(self) -> list[str]:
        """Running tasks whose lease has passed: their consumer died."""
        ids = self._call(self.client.zrangebyscore, self._running_key, "-inf", time.time())
        return [str(_text(i)) for i in ids]

    # -- dead letters ----------------------------------------------------------
    def add_dead_letter(self, record: DeadLetter) -> None:
        """Store a dead letter that belongs to no task record (undecodable bytes)."""
        order_key, records_key = self.dead_letter_keys(record.queue_name)
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(records_key, record.id, record.model_dump_json())
        pipe.zadd(order_key, {record.id: record.failed_at})
        self._call(pipe.execute)

    def dead_letters(
        self, queue: str, limit: int | None, ids: list[str] | None
    ) -> list[DeadLetter]:
        """Records of dead-letter queue ``queue``, oldest first."""
        order_key, records_key = self.dead_letter_keys(queue)
        if ids is None:
            end = -1 if limit is None else limit - 1
            ids = [str(_text(i)) for i in self._call(self.client.zrange, order_key, 0, end)]
        if not ids:
            return []
        raw = self._call(self.client.hmget, records_key, ids)
        return [DeadLetter.model_validate_json(r) for r in raw if r is not None]

    def delete_dead_letters(self, queue: str, ids: list[str] | None) -> int:
        """Delete records of ``queue`` (all when ``ids`` is None); return how many."""
        order_key, records_key = self.dead_letter_keys(queue)
        if ids is None:
            count = int(self._call(self.client.zcard, order_key))
            self._call(self.client.delete, order_key, records_key)
            return count
        if not ids:
            return 0
        pipe = self.client.pipeline(transaction=True)
        pipe.zrem(order_key, *ids)
        pipe.hdel(records_key, *ids)
        removed, _ = self._call(pipe.execute)
        return int(removed)

    def purge_queue(self, dead_letter_queues: Iterable[str | None] = ()) -> None:
        """Delete everything this queue keeps: task records, leases,
        idempotency keys, and the given dead-letter queues."""
        queue = self.queue_name
        keys = [self._running_key]
        for dead_letter_queue in dead_letter_queues:
            if dead_letter_queue:
                keys += self.dead_letter_keys(dead_letter_queue)
        keys += self.client.scan_iter(match=f"{self.prefix}:idem:{queue}:*", count=1000)
        for key in self.client.scan_iter(match=f"{self.prefix}:task:*", count=1000):
            if self.client.hget(key, "queue") == queue.encode():
                keys.append(key)
        self._call(self.client.delete, *keys)

    def count_dead_letters(self, queue: str | None) -> int | None:
        """How many records ``queue`` holds (None when no queue is configured)."""
        if queue is None:
            return None
        return int(self._call(self.client.zcard, self.dead_letter_keys(queue)[0]))


class StoreRecorder(DeliveryRecorder):
    """Records one delivery in a :class:`RedisTaskStore`.

    ``republish(message, delay_s)`` must make the task deliverable again after
    ``delay_s`` (the engine's delayed send); it is called after RETRY is
    stored, and an exception from it leaves the delivery unacknowledged.
    """

    def __init__(
        self,
        store: RedisTaskStore,
        lease_s: float,
        republish: Callable[[TaskMessage, float], None],
    ) -> None:
        self._store = store
        self._lease_s = lease_s
        self._republish = republish

    def begin(self, message: TaskMessage, runner: TaskRunner) -> tuple[int, DeliveryRecorder]:
        """Count a delivery of ``message`` and, when ``runner`` has its handler,
        set STARTED in the same round trip; the attempt and the recorder to pass
        to ``runner.process`` for this delivery."""
        if message.name not in runner.handlers:
            return self._store.begin_delivery(message), self
        attempt, started = self._store.begin_and_start(
            message, self._lease_s, runner.config.max_attempts
        )
        return attempt, _BegunRecorder(self._store, self._lease_s, self._republish, started)

    def mark_started(self, message: TaskMessage, attempt: int) -> bool:
        return self._store.start(message.id, attempt, self._lease_s)

    def record_success(self, message: TaskMessage, result: Any, attempt: int) -> None:
        self._store.finish(message.id, TaskState.SUCCESS, result=result, has_result=True)

    def record_retry(
        self, message: TaskMessage, error: TaskError, attempt: int, delay_s: float
    ) -> None:
        self._store.schedule_retry(message.id, error)
        self._republish(message, delay_s)

    def record_failure(
        self, message: TaskMessage, error: TaskError, attempt: int, dead_letter: DeadLetter | None
    ) -> None:
        self._store.finish(message.id, TaskState.FAILURE, error=error, dead_letter=dead_letter)

    def record_cancelled(self, message: TaskMessage, attempt: int) -> None:
        self._store.finish(message.id, TaskState.CANCELLED)

    def record_unprocessable(
        self, message: TaskMessage | None, error: TaskError, dead_letter: DeadLetter | None
    ) -> None:
        if message is not None:
            self._store.finish(message.id, TaskState.FAILURE, error=error, dead_letter=dead_letter)
        elif dead_letter is not None:
            self._store.finish(
                dead_letter.id, TaskState.FAILURE, error=error, dead_letter=dead_letter
            )


class _BegunRecorder(StoreRecorder):
    """The recorder of a delivery that :meth:`StoreRecorder.begin` already tried
    to start: the runner's start is answered without another round trip."""

    def __init__(
        self,
        store: RedisTaskStore,
        lease_s: float,
        republish: Callable[[TaskMessage, float], None],
        started: bool,
    ) -> None:
        super().__init__(store, lease_s, republish)
        self._started = started

    def mark_started(self, message: TaskMessage, attempt: int) -> bool:
        return self._started
