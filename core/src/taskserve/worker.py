"""Running a consumer as its own process, outside Ray Serve.

``python -m taskserve.worker --config config.yaml --handlers pkg.mod:HANDLERS``
consumes the configured queue until SIGTERM or SIGINT, then stops gracefully
(running tasks finish within ``--graceful-timeout``). ``HANDLERS`` is a
mapping of task name to function, or a list of functions (named after
themselves). The line ``taskserve-worker ready`` is printed once consuming.
The process ends by itself, with exit code 1, only when its consumer has
not been running for :data:`DEAD_AFTER_S` seconds in a row (a consumer
restarting its engine's loop after a broker outage comes back well before),
or at once when a handler outlived its time limit by the grace period
(``task_time_limit_grace_s``).

``--log-level LEVEL`` (default WARNING) and ``--log-format text|json`` set
where its logs go: standard error, each line naming the task it was logged
for (see :mod:`taskserve.logs`); at INFO every task event has a line.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from taskserve.adapter import DEFAULT_GRACEFUL_TIMEOUT_S, TaskProcessorAdapter
from taskserve.config import TaskProcessorConfig
from taskserve.errors import ConfigError
from taskserve.factory import instantiate_adapter_from_config
from taskserve.logs import add_logging_arguments, configure_logging

READY_LINE = "taskserve-worker ready"

DEAD_AFTER_S = 30.0
"""How long the consumer may stay not running before the process ends."""


def load_handlers(spec: str) -> dict[str, Callable[..., Any]]:
    """Import ``module:attribute`` and return it as name -> handler."""
    module_name, sep, attr = spec.partition(":")
    if not sep:
        raise ConfigError(f"--handlers must look like 'package.module:NAME', got '{spec}'")
    target = getattr(importlib.import_module(module_name), attr)
    if isinstance(target, Mapping):
        return dict(target)
    if isinstance(target, Iterable):
        return {fn.__name__: fn for fn in target}
    raise ConfigError(f"{spec} must be a mapping of name to function or a list of functions")


def run_worker(
    config: TaskProcessorConfig,
    handlers: Mapping[str, Callable[..., Any]],
    concurrency: int | None = None,
    graceful_timeout_s: float = DEFAULT_GRACEFUL_TIMEOUT_S,
) -> None:
    """Consume until SIGTERM/SIGINT (main thread only), then stop gracefully.

    Exits the process with code 1 when the consumer died (see the module
    docstring) instead of returning."""
    adapter: TaskProcessorAdapter = instantiate_adapter_from_config(config)
    adapter.initialize(consumer_concurrency=concurrency)
    for name, handler in handlers.items():
        adapter.register_task_handle(handler, name)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    adapter.start_consumer()
    print(READY_LINE, flush=True)
    down_since: float | None = None
    died = False
    while not stop.wait(0.5):
        if adapter.consumer_overran:
            print(
                "taskserve-worker: a handler outlived its time limit; the consumer is replaced",
                file=sys.stderr,
                flush=True,
            )
            died = True
            break
        if adapter.health_check_sync().consumer_running:
            down_since = None
            continue
        down_since = down_since or time.monotonic()
        if time.monotonic() - down_since >= DEAD_AFTER_S:
            print("taskserve-worker: consumer died", file=sys.stderr, flush=True)
            died = True
            break
    adapter.stop_consumer(timeout=graceful_timeout_s)
    adapter.shutdown()
    _exit_if_handlers_linger(1 if died else 0)
    if died:
        sys.exit(1)


def _exit_if_handlers_linger(code: int = 0) -> None:
    """End the process now if threads (handlers that outlived the graceful
    timeout) are still running.

    Their tasks were handed back to the queue, so nothing is lost; waiting for
    them, as interpreter exit does for thread-pool workers, would keep a
    stopped consumer running past its graceful timeout (forever for an async
    handler, whose event loop is closed).
    """
    if threading.active_count() > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m taskserve.worker", description=__doc__)
    parser.add_argument("--config", required=True, help="YAML file, or JSON text")
    parser.add_argument("--handlers", required=True, help="package.module:NAME")
    parser.add_argument("--concurrency", type=int, default=None)
    parser.add_argument("--graceful-timeout", type=float, default=DEFAULT_GRACEFUL_TIMEOUT_S)
    add_logging_arguments(parser)
    args = parser.parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    run_worker(
        TaskProcessorConfig.load(args.config),
        load_handlers(args.handlers),
        concurrency=args.concurrency,
        graceful_timeout_s=args.graceful_timeout,
    )


if __name__ == "__main__":
    main()
