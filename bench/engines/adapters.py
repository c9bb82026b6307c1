"""taskserve's adapters: a producer adapter here, ``python -m taskserve.worker`` as consumer.

The settings are the adapters' defaults except where a raw engine is given
the same value: the consumer concurrency, the lease, and Dramatiq's idle poll
(``worker_timeout_s``). Cleanup goes through each plugin's broker harness (the
one the conformance suite uses), which deletes the queue and every key of it.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from bench.brokers import POSTGRES_DSN, REDIS, REDIS_URL, SQLITE_FILE, broker_url, pika_url
from bench.engines.base import ConsumerCommand, TaskFailed, Trial, TrialOptions
from taskserve import REVEAL_SECRETS

DRAMATIQ_WORKER_TIMEOUT_S = 0.1
"""Idle poll of Dramatiq consumers, taskserve's and raw alike."""

ADAPTERS = ("sqlite", "celery", "dramatiq", "rq", "postgres")


def adapter_config(adapter: str, broker: str, options: TrialOptions) -> Any:
    """The typed ``adapter_config`` of ``adapter`` on ``broker`` for one run."""
    prefix = f"bench-{options.run_id}"
    if adapter == "sqlite":
        from taskserve.adapters.sqlite.config import SqliteAdapterConfig

        return SqliteAdapterConfig(path=str(options.workdir / f"{options.run_id}.db"))
    if adapter == "celery":
        from taskserve_celery import CeleryAdapterConfig

        return CeleryAdapterConfig(
            broker_url=broker_url(broker), backend_url=REDIS_URL, key_prefix=prefix
        )
    if adapter == "dramatiq":
        from taskserve_dramatiq import DramatiqAdapterConfig

        if broker == REDIS:
            return DramatiqAdapterConfig(
                broker_url=REDIS_URL,
                key_prefix=prefix,
                broker_options={"namespace": prefix},
                worker_timeout_s=DRAMATIQ_WORKER_TIMEOUT_S,
            )
        return DramatiqAdapterConfig(
            broker_url=pika_url(),
            state_url=REDIS_URL,
            key_prefix=prefix,
            worker_timeout_s=DRAMATIQ_WORKER_TIMEOUT_S,
        )
    if adapter == "rq":
        from taskserve_rq import RQAdapterConfig

        return RQAdapterConfig(redis_url=REDIS_URL, key_prefix=prefix)
    if adapter == "postgres":
        from taskserve_postgres import PostgresAdapterConfig

        return PostgresAdapterConfig(dsn=POSTGRES_DSN, schema_name=f"bench_{options.run_id}")
    raise ValueError(f"unknown adapter '{adapter}'; known: {', '.join(ADAPTERS)}")


def processor_config(adapter: str, broker: str, options: TrialOptions, **fields: Any) -> Any:
    """The :class:`~taskserve.TaskProcessorConfig` of one run."""
    from taskserve import TaskProcessorConfig

    return TaskProcessorConfig(
        queue_name=f"bench-{options.run_id}",
        adapter_config=adapter_config(adapter, broker, options),
        lease_s=options.lease_s,
        consumer_concurrency=options.concurrency,
        **fields,
    )


def config_json(config: Any) -> str:
    """``config`` as the JSON text ``python -m taskserve.worker --config`` reads."""
    data = config.model_dump(
        mode="json", exclude={"adapter", "adapter_config"}, context=REVEAL_SECRETS
    )
    data["adapter"] = config.adapter_config.adapter_alias
    data["adapter_config"] = config.adapter_config.model_dump(mode="json", context=REVEAL_SECRETS)
    return json.dumps(data)


def cleanup(adapter: str, config: Any) -> None:
    """Delete the queue of ``config`` and every key the run wrote."""
    if adapter == "sqlite":
        path = config.adapter_config.path
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path + suffix)
        return
    harness: Any
    if adapter == "celery":
        from taskserve_celery.testing import CeleryHarness

        harness = CeleryHarness()
    elif adapter == "dramatiq":
        from taskserve_dramatiq.testing import DramatiqHarness

        harness = DramatiqHarness()
    elif adapter == "postgres":
        from taskserve_postgres.testing import PostgresHarness

        harness = PostgresHarness()
    else:
        from taskserve_rq.testing import RQHarness

        harness = RQHarness()
    harness.cleanup(config)


class AdapterTrial(Trial):
    """A taskserve adapter on a fresh queue."""

    def __init__(self, adapter: str, broker: str, options: TrialOptions) -> None:
        from taskserve import instantiate_adapter_from_config

        if (adapter == "sqlite") != (broker == SQLITE_FILE):
            raise ValueError(f"adapter '{adapter}' does not run on '{broker}'")
        self.adapter_name = adapter
        fields = {} if options.result_ttl_s is None else {"result_ttl_s": options.result_ttl_s}
        self.config = processor_config(adapter, broker, options, **fields)
        self.producer = instantiate_adapter_from_config(self.config)
        self.producer.initialize()

    def enqueue(self, task: str, args: Sequence[Any] = ()) -> str:
        return str(self.producer.enqueue_task_sync(task, list(args)).id)

    def succeeded(self, task_id: str) -> bool:
        from taskserve import TaskState

        status = self.producer.get_task_status_sync(task_id).status
        if status is TaskState.SUCCESS:
            return True
        if status in (TaskState.FAILURE, TaskState.CANCELLED):
            raise TaskFailed(f"task {task_id} ended {status.value}")
        return False

    def consumer(self) -> ConsumerCommand:
        from taskserve.worker import READY_LINE

        argv = [
            sys.executable,
            "-m",
            "taskserve.worker",
            "--config",
            config_json(self.config),
            "--handlers",
            "bench.tasks:HANDLERS",
            "--concurrency",
            str(self.config.consumer_concurrency),
        ]
        return ConsumerCommand(argv, ready_line=READY_LINE)

    def close(self) -> None:
        try:
            self.producer.shutdown()
        finally:
            cleanup(self.adapter_name, self.config)
