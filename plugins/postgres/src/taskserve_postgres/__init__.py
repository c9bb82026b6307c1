"""taskserve adapter for PostgreSQL: queue and results in PostgreSQL, no other broker.

Select it with ``adapter="postgres"`` or by passing a
:class:`PostgresAdapterConfig` as ``TaskProcessorConfig.adapter_config``. The
adapter class is imported on first use, so that validating a configuration
never imports psycopg.
"""

from typing import TYPE_CHECKING

from taskserve.kit import lazy_attributes
from taskserve_postgres.config import PostgresAdapterConfig

if TYPE_CHECKING:
    from taskserve_postgres.adapter import PostgresAdapter

__getattr__ = lazy_attributes(__name__, {"PostgresAdapter": "taskserve_postgres.adapter"})

__all__ = ["PostgresAdapter", "PostgresAdapterConfig"]
