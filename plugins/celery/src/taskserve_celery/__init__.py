"""taskserve-celery: the Celery adapter of taskserve (alias ``celery``).

Celery moves the messages on Redis or RabbitMQ; a Celery worker runs inside
the replica's process; task state lives in Redis. See the README for what it
keeps that Celery alone does not. The adapter class is imported on first use,
so that validating a configuration never imports Celery.
"""

from typing import TYPE_CHECKING

from taskserve.kit import lazy_attributes
from taskserve_celery.config import CeleryAdapterConfig

if TYPE_CHECKING:
    from taskserve_celery.adapter import CeleryAdapter, CeleryTaskProcessorAdapter

__getattr__ = lazy_attributes(
    __name__,
    {
        "CeleryAdapter": "taskserve_celery.adapter",
        "CeleryTaskProcessorAdapter": "taskserve_celery.adapter",
    },
)

__all__ = ["CeleryAdapter", "CeleryAdapterConfig", "CeleryTaskProcessorAdapter"]
