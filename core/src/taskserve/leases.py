"""Deprecated: import LeaseKeeper from :mod:`taskserve.kit`."""

from taskserve._deprecated import moved
from taskserve.engine.leases import MAX_TICK_S, LeaseKeeper

moved("taskserve.leases", "LeaseKeeper and MAX_TICK_S")

__all__ = ["MAX_TICK_S", "LeaseKeeper"]
