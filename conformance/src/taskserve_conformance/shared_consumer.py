"""A consumer process serving several task processor configs at once.

``python -m taskserve_conformance.shared_consumer --config A --config B
--handlers pkg.mod:HANDLERS`` starts one adapter per config in this single
process, the way two deployments share a replica process, so the suite can
check that dead-letter routing stays with its own adapter (SPEC §4.10).
It prints the worker's ready line once every consumer runs and stops them
all gracefully on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import signal
import threading

from taskserve import TaskProcessorAdapter, TaskProcessorConfig, instantiate_adapter_from_config
from taskserve.worker import READY_LINE, load_handlers


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m taskserve_conformance.shared_consumer", description=__doc__
    )
    parser.add_argument("--config", action="append", required=True, help="JSON text or YAML file")
    parser.add_argument("--handlers", required=True, help="package.module:NAME")
    parser.add_argument("--concurrency", type=int, default=None)
    args = parser.parse_args(argv)
    handlers = load_handlers(args.handlers)
    adapters: list[TaskProcessorAdapter] = []
    for source in args.config:
        adapter = instantiate_adapter_from_config(TaskProcessorConfig.load(source))
        adapter.initialize(consumer_concurrency=args.concurrency)
        for name, handler in handlers.items():
            adapter.register_task_handle(handler, name)
        adapters.append(adapter)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    for adapter in adapters:
        adapter.start_consumer()
    print(READY_LINE, flush=True)
    while not stop.wait(0.5):
        pass
    for adapter in adapters:
        adapter.shutdown()


if __name__ == "__main__":
    main()
