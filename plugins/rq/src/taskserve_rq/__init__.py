"""taskserve-rq: the RQ (Redis Queue) adapter of taskserve.

Select it with ``TaskProcessorConfig(adapter="rq", adapter_config={...})`` or
by passing an :class:`RQAdapterConfig` as ``adapter_config``.
"""

from taskserve_rq.adapter import RQAdapter
from taskserve_rq.config import RQAdapterConfig

__all__ = ["RQAdapter", "RQAdapterConfig"]
