"""Deprecated: import RedisTaskStore and StoreRecorder from :mod:`taskserve.kit`."""

from taskserve._deprecated import moved
from taskserve.engine.recorder import StoreRecorder
from taskserve.engine.redis.store import RedisTaskStore

moved("taskserve.stores.redis_store", "RedisTaskStore and StoreRecorder")

__all__ = ["RedisTaskStore", "StoreRecorder"]
