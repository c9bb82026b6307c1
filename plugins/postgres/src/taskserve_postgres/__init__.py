"""taskserve adapter for PostgreSQL: queue and results in PostgreSQL, no other broker.

Select it with ``adapter="postgres"`` or by passing a
:class:`PostgresAdapterConfig` as ``TaskProcessorConfig.adapter_config``.
"""

from taskserve_postgres.adapter import PostgresAdapter
from taskserve_postgres.config import PostgresAdapterConfig

__all__ = ["PostgresAdapter", "PostgresAdapterConfig"]
