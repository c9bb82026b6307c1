"""Deprecated: build adapters on :class:`taskserve.kit.StoreAdapter`."""

from taskserve._deprecated import moved
from taskserve.engine.store_adapter import StoreAdapter

moved("taskserve.stores.redis_adapter", "StoreAdapter (the successor of RedisStoreAdapter)")

RedisStoreAdapter = StoreAdapter
"""The former name of the store-backed adapter base."""

__all__ = ["RedisStoreAdapter"]
