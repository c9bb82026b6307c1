"""Harness pieces for adapters that keep task state in the core's Redis store.

The Celery, Dramatiq and RQ adapters (and any third-party adapter built on
:class:`taskserve.kit.RedisTaskStore`) break dead-letter
writes and clean up the store the same way; their harnesses call these.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from taskserve.kit import RedisTaskStore, TaskProcessorConfig

_BROKEN = "dead-letter writes are broken by the conformance harness"


def dead_letter_queues(config: TaskProcessorConfig) -> list[str]:
    """The dead-letter queues ``config`` names."""
    queues = (config.failed_task_queue_name, config.unprocessable_task_queue_name)
    return [queue for queue in queues if queue]


@contextlib.contextmanager
def broken_dead_letter_writes(store: RedisTaskStore, config: TaskProcessorConfig) -> Iterator[None]:
    """Inside the block every write of a dead-letter record of ``config`` fails.

    The records hashes are replaced by strings (the store writes the record
    before the FAILURE status, so a failed write leaves the task unfinished);
    listing, which reads the order zsets, still works. Restored on exit, and
    ``store`` is closed.
    """
    keys = [store.dead_letter_keys(queue)[1] for queue in dead_letter_queues(config)]
    saved = {key: store.client.dump(key) for key in keys}
    try:
        for key in keys:
            store.client.set(key, _BROKEN)
        yield
    finally:
        for key, dumped in saved.items():
            store.client.delete(key)
            if dumped is not None:
                store.client.restore(key, 0, dumped)
        store.close()


def purge_store(store: RedisTaskStore, config: TaskProcessorConfig) -> None:
    """Delete the store's records, leases, idempotency keys and dead letters of
    ``config``'s queue."""
    store.purge_queue(dead_letter_queues(config))
