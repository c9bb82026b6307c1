"""taskserve-celery: the Celery adapter of taskserve (alias ``celery``).

Celery moves the messages on Redis or RabbitMQ; a Celery worker runs inside
the replica's process; task state lives in Redis. See the README for what it
keeps that Celery alone does not.
"""

from taskserve_celery.adapter import CeleryAdapter
from taskserve_celery.config import CeleryAdapterConfig

CeleryTaskProcessorAdapter = CeleryAdapter
"""The name of Ray Serve's built-in Celery adapter class, for code that imports it."""

__all__ = ["CeleryAdapter", "CeleryAdapterConfig", "CeleryTaskProcessorAdapter"]
