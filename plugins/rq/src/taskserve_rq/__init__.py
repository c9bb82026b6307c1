"""taskserve-rq: the RQ (Redis Queue) adapter of taskserve.

Select it with ``TaskProcessorConfig(adapter="rq", adapter_config={...})`` or
by passing an :class:`RQAdapterConfig` as ``adapter_config``. The adapter class
is imported on first use, so that validating a configuration never imports RQ.
"""

from typing import TYPE_CHECKING

from taskserve.kit import lazy_attributes
from taskserve_rq.config import RQAdapterConfig

if TYPE_CHECKING:
    from taskserve_rq.adapter import RQAdapter

__getattr__ = lazy_attributes(__name__, {"RQAdapter": "taskserve_rq.adapter"})

__all__ = ["RQAdapter", "RQAdapterConfig"]
