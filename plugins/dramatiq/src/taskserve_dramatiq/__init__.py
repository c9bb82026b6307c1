"""taskserve adapter for Dramatiq: tasks on Dramatiq's Redis or RabbitMQ broker.

Select it with ``adapter="dramatiq"`` or by passing a
:class:`DramatiqAdapterConfig` as ``TaskProcessorConfig.adapter_config``.
"""

from taskserve_dramatiq.adapter import DramatiqAdapter
from taskserve_dramatiq.config import DramatiqAdapterConfig

__all__ = ["DramatiqAdapter", "DramatiqAdapterConfig"]
