"""taskserve adapter for Dramatiq: tasks on Dramatiq's Redis or RabbitMQ broker.

Select it with ``adapter="dramatiq"`` or by passing a
:class:`DramatiqAdapterConfig` as ``TaskProcessorConfig.adapter_config``. The
adapter class is imported on first use, so that validating a configuration
never imports Dramatiq.
"""

from typing import TYPE_CHECKING

from taskserve.kit import lazy_attributes
from taskserve_dramatiq.config import DramatiqAdapterConfig

if TYPE_CHECKING:
    from taskserve_dramatiq.adapter import DramatiqAdapter

__getattr__ = lazy_attributes(__name__, {"DramatiqAdapter": "taskserve_dramatiq.adapter"})

__all__ = ["DramatiqAdapter", "DramatiqAdapterConfig"]
