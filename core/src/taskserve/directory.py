"""Which queue handles which task, for producers that know only an adapter config.

Ray Serve's PDF template builds its producer from the adapter config alone
(``CeleryAdapter(adapter_config)``, see :class:`~taskserve.TaskProcessorAdapter`)
and lets the consumer's declaration decide the queue. ``@task_consumer`` therefore records, for each task name, the queue
it consumes, keyed by a fingerprint of the adapter and its config (a hash: no
URL or password is stored). Records live in this process and, when Ray is
running, in Ray's cluster key-value store, so a producer in another replica
finds them too.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Mapping

from taskserve.adapter_config import AdapterConfig
from taskserve.config import TaskProcessorConfig
from taskserve.redaction import REVEAL_SECRETS
from taskserve.selection import load_selected

logger = logging.getLogger(__name__)

_KV_NAMESPACE = "taskserve"
_lock = threading.Lock()
_local: dict[tuple[str, str], str] = {}


def fingerprint(adapter_config: AdapterConfig, adapter: str | type | None = None) -> str:
    """A stable hash of an adapter selection and its config."""
    found, _ = load_selected(
        adapter if adapter is not None else (type(adapter_config).adapter_alias or "sqlite")
    )
    data = adapter_config.model_dump(mode="json", context=REVEAL_SECRETS)
    text = json.dumps(
        [getattr(found, "__module__", ""), getattr(found, "__qualname__", repr(found)), data],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _kv_key(print_: str, task_name: str) -> bytes:
    return f"queue:{print_}:{task_name}".encode()


def _kv() -> tuple[object, object] | None:
    """Ray's internal key-value put/get functions when Ray is initialized."""
    try:
        import ray
        from ray.experimental import internal_kv
    except ImportError:
        return None
    try:
        if not ray.is_initialized() or not internal_kv._internal_kv_initialized():  # type: ignore[no-untyped-call]
            return None
    except Exception:
        return None
    return internal_kv._internal_kv_put, internal_kv._internal_kv_get


def declare_consumer(config: TaskProcessorConfig, handlers: Mapping[str, str]) -> None:
    """Record that ``config.queue_name`` handles ``handlers``' task names (this process)."""
    try:
        print_ = fingerprint(config.adapter_config, config.adapter)
    except Exception as e:  # an adapter that cannot be resolved fails later, loudly
        logger.debug("taskserve: not recording consumer of '%s': %s", config.queue_name, e)
        return
    with _lock:
        for task_name in handlers:
            _local[(print_, task_name)] = config.queue_name


def publish_consumer(config: TaskProcessorConfig, task_names: list[str]) -> None:
    """Record the consumer cluster-wide (Ray's key-value store), if Ray is up."""
    declare_consumer(config, dict.fromkeys(task_names, ""))
    kv = _kv()
    if kv is None:
        return
    put = kv[0]
    print_ = fingerprint(config.adapter_config, config.adapter)
    for task_name in task_names:
        try:
            put(  # type: ignore[operator]
                _kv_key(print_, task_name),
                config.queue_name.encode(),
                True,
                namespace=_KV_NAMESPACE,
            )
        except Exception as e:
            logger.debug("taskserve: could not publish consumer of '%s': %s", task_name, e)


def queue_for(
    adapter_config: AdapterConfig, task_name: str, adapter: str | type | None
) -> str | None:
    """The queue whose consumer handles ``task_name`` with this adapter config."""
    print_ = fingerprint(adapter_config, adapter)
    with _lock:
        queue = _local.get((print_, task_name))
    if queue is not None:
        return queue
    kv = _kv()
    if kv is None:
        return None
    get = kv[1]
    try:
        value = get(_kv_key(print_, task_name), namespace=_KV_NAMESPACE)  # type: ignore[operator]
    except Exception:
        return None
    return value.decode() if isinstance(value, bytes) else None
