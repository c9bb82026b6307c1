"""Visibility of fetched messages on the Redis transport.

kombu emulates acknowledgements on Redis: a fetched message is kept in an
``unacked`` hash, indexed by fetch time in a sorted set, and a consumer puts
it back on the queue once it is older than the visibility timeout. The
adapter sets that timeout to the lease (instead of kombu's hour), so the
messages of a consumer that died come back within the lease, and pushes the
index entry of every message it still holds forward while it runs, so a long
task is never handed to a second consumer. Both go through kombu's own
channel and QoS objects, on a connection used by the lease keeper thread only.

RabbitMQ needs neither: it requeues the messages of a closed connection at
once and never redelivers a message its consumer still holds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from celery import Celery

logger = logging.getLogger(__name__)


class RedisVisibility:
    """Extends and restores the visibility of one queue's fetched messages."""

    def __init__(self, app: Celery) -> None:
        self._app = app
        self._connection: Any = None

    def _channel(self) -> Any:
        if self._connection is None:
            self._connection = self._app.connection_for_write()
        return self._connection.default_channel

    def _reset(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.release()
            except Exception:
                logger.debug(
                    "taskserve-celery: releasing a broken connection failed", exc_info=True
                )

    def extend(self, delivery_tags: Iterable[str]) -> None:
        """Mark the messages of ``delivery_tags`` as fetched just now."""
        tags = list(delivery_tags)
        if not tags:
            return
        try:
            channel = self._channel()
            channel.client.zadd(
                channel.unacked_index_key, dict.fromkeys(tags, time.time()), xx=True
            )
        except Exception:
            self._reset()
            raise

    def restore_expired(self) -> None:
        """Put back on their queue the messages held longer than the lease."""
        try:
            self._channel().qos.restore_visible(num=None, interval=1)
        except Exception:
            self._reset()
            raise

    def close(self) -> None:
        """Release the connection."""
        self._reset()
