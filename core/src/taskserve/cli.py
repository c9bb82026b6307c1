"""The ``taskserve`` command line.

::

    taskserve adapters                         installed adapters and their capabilities
    taskserve check   -c config.yaml           can the broker be reached?
    taskserve show    -c config.yaml TASK_ID   a task's status, result or error
    taskserve enqueue -c config.yaml NAME --kwargs '{"x": 1}'
    taskserve cancel  -c config.yaml TASK_ID
    taskserve metrics -c config.yaml           queue depth, in flight, dead letters
    taskserve dead-letters list|redrive|purge -c config.yaml [--kind failed] [--ids ...]
    taskserve worker  -c config.yaml --handlers package.module:HANDLERS

``-c/--config`` is a YAML file of ``TaskProcessorConfig`` fields (``--key``
selects a section of it) or JSON text; it defaults to the ``TASKSERVE_CONFIG``
environment variable. Exit status: 0 success, 1 failure (unhealthy broker,
unknown task...), 2 invalid usage or configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TextIO

from taskserve.adapter import DEFAULT_GRACEFUL_TIMEOUT_S, TaskProcessorAdapter
from taskserve.capabilities import Capability
from taskserve.config import TaskProcessorConfig
from taskserve.errors import ConfigError, InvalidArgument, TaskserveError
from taskserve.factory import instantiate_adapter_from_config
from taskserve.models import DeadLetterKind
from taskserve.redaction import redact_url
from taskserve.registry import installed_adapters, resolve_adapter
from taskserve.scheduling import due_time, task_priority

CONFIG_ENV = "TASKSERVE_CONFIG"

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class _UsageError(Exception):
    """Bad command-line input (exit status 2)."""


def _dump(value: Any, out: TextIO) -> None:
    # ensure_ascii: a stored string no terminal encoding can show is escaped.
    out.write(json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")


def load_config(source: str | None, key: str | None = None) -> TaskProcessorConfig:
    """A config from JSON text, or a YAML file (optionally its section ``key``)."""
    source = source or os.environ.get(CONFIG_ENV)
    if not source:
        raise _UsageError(f"no configuration: pass --config FILE or set {CONFIG_ENV}")
    if not source.lstrip().startswith("{") and not os.path.isfile(source):
        raise _UsageError(f"--config: no such file '{source}'")
    return TaskProcessorConfig.load(source, key)


def _adapter(args: argparse.Namespace) -> TaskProcessorAdapter:
    return instantiate_adapter_from_config(load_config(args.config, args.key))


def _json_arg(text: str | None, what: str, kind: type) -> Any:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as e:
        raise _UsageError(f"{what} is not valid JSON: {e}") from e
    if not isinstance(value, kind):
        raise _UsageError(f"{what} must be a JSON {'array' if kind is list else 'object'}")
    return value


# -- commands -------------------------------------------------------------------
def cmd_adapters(args: argparse.Namespace, out: TextIO) -> int:
    """List installed adapters and their capabilities (no broker connection)."""
    rows: list[dict[str, Any]] = []
    for alias, entry_point in sorted(installed_adapters().items()):
        row: dict[str, Any] = {"alias": alias, "target": entry_point.value}
        try:
            adapter_cls = resolve_adapter(alias)
        except TaskserveError as e:
            row.update(available=False, error=str(e))
        else:
            row.update(
                available=True,
                capabilities=sorted(c.value for c in adapter_cls.capabilities),
                config_fields=sorted(adapter_cls.config_model.model_fields),
            )
        rows.append(row)
    if args.json:
        _dump(rows, out)
        return EXIT_OK
    if not rows:
        out.write("no adapters installed\n")
        return EXIT_OK
    every = [c.value for c in Capability]
    for row in rows:
        out.write(f"{row['alias']}  ({row['target']})\n")
        if not row["available"]:
            out.write(f"  unavailable: {row['error']}\n")
            continue
        for capability in every:
            mark = "yes" if capability in row["capabilities"] else "no "
            out.write(f"  {mark}  {capability}\n")
        out.write(f"  config: {', '.join(row['config_fields']) or '(none)'}\n")
    return EXIT_OK


def cmd_check(args: argparse.Namespace, out: TextIO) -> int:
    """Connect and report the broker's health."""
    config = load_config(args.config, args.key)
    adapter = instantiate_adapter_from_config(config)
    try:
        report = adapter.health_check_sync()
    finally:
        adapter.shutdown()
    _dump({"adapter": adapter.alias, "queue": config.queue_name, **report.model_dump()}, out)
    return EXIT_OK if report.healthy else EXIT_FAILURE


def cmd_show(args: argparse.Namespace, out: TextIO) -> int:
    """Print a task's status record."""
    adapter = _adapter(args)
    try:
        _dump(adapter.get_task_status_sync(args.task_id).model_dump(mode="json"), out)
    finally:
        adapter.shutdown()
    return EXIT_OK


def _time_arg(text: str | None, flag: str) -> datetime | None:
    """An ISO 8601 time given on the command line (its offset is required)."""
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError as e:
        raise InvalidArgument(
            f"{flag} must be an ISO 8601 time with an offset (e.g. 2026-01-31T12:00:00Z): {e}"
        ) from e


def cmd_enqueue(args: argparse.Namespace, out: TextIO) -> int:
    """Enqueue a task."""
    task_args = _json_arg(args.args, "--args", list)
    task_kwargs = _json_arg(args.kwargs, "--kwargs", dict)
    eta = _time_arg(args.eta, "--eta")
    due_time(args.delay_s, eta)  # refused before connecting
    task_priority(args.priority)
    adapter = _adapter(args)
    try:
        result = adapter.enqueue_task_sync(
            args.task_name,
            task_args,
            task_kwargs,
            idempotency_key=args.idempotency_key,
            delay_s=args.delay_s,
            eta=eta,
            priority=args.priority,
        )
    finally:
        adapter.shutdown()
    _dump(result.model_dump(mode="json"), out)
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace, out: TextIO) -> int:
    """Cancel a task."""
    adapter = _adapter(args)
    try:
        outcome = adapter.cancel_task_sync(args.task_id)
    finally:
        adapter.shutdown()
    _dump(outcome.model_dump(mode="json"), out)
    return EXIT_OK


def cmd_metrics(args: argparse.Namespace, out: TextIO) -> int:
    """Print the queue's depth, in-flight count and dead-letter counts."""
    adapter = _adapter(args)
    try:
        _dump(adapter.get_metrics_sync().model_dump(mode="json"), out)
    finally:
        adapter.shutdown()
    return EXIT_OK


def cmd_dead_letters(args: argparse.Namespace, out: TextIO) -> int:
    """List, redrive or purge dead letters."""
    kind = DeadLetterKind(args.kind)
    ids = list(args.ids) if args.ids else None
    if args.action == "purge" and ids is None and not args.yes:
        raise _UsageError("purging a whole dead-letter queue needs --yes (or pass --ids)")
    adapter = _adapter(args)
    try:
        if args.action == "list":
            records = adapter.list_dead_letters_sync(kind, args.limit)
            if ids is not None:
                records = [r for r in records if r.id in ids]
            _dump([r.model_dump(mode="json", exclude={"raw"}) | _raw(r.raw) for r in records], out)
        elif args.action == "redrive":
            outcome = adapter.redrive_dead_letters_sync(ids, kind)
            _dump(
                {
                    "redriven": [
                        {"dead_letter_id": record, "task_id": t.id, "retried_from": t.retried_from}
                        for record, t in zip(outcome.dead_letter_ids, outcome, strict=True)
                    ],
                    "not_redriven": [n.model_dump() for n in outcome.not_redriven],
                },
                out,
            )
        else:
            _dump({"purged": adapter.purge_dead_letters_sync(kind, ids)}, out)
    finally:
        adapter.shutdown()
    return EXIT_OK


def _raw(raw: bytes | None) -> dict[str, Any]:
    import base64

    return {"raw_base64": base64.b64encode(raw).decode() if raw else None}


def cmd_worker(args: argparse.Namespace, out: TextIO) -> int:
    """Consume the queue in this process until SIGTERM/SIGINT."""
    from taskserve.worker import load_handlers, run_worker

    run_worker(
        load_config(args.config, args.key),
        load_handlers(args.handlers),
        concurrency=args.concurrency,
        graceful_timeout_s=args.graceful_timeout,
    )
    return EXIT_OK


# -- parser ---------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``taskserve`` command."""
    parser = argparse.ArgumentParser(
        prog="taskserve",
        description="Inspect and operate taskserve queues.",
        epilog=f"--config defaults to ${CONFIG_ENV}.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sub.add_argument("-c", "--config", help="YAML file of TaskProcessorConfig, or JSON text")
        sub.add_argument("--key", help="use this top-level section of the config file")
        return sub

    adapters = commands.add_parser("adapters", help="list installed adapters and capabilities")
    adapters.add_argument("--json", action="store_true", help="print JSON")
    adapters.set_defaults(func=cmd_adapters)

    with_config(commands.add_parser("check", help="check the broker can be reached")).set_defaults(
        func=cmd_check
    )

    show = with_config(commands.add_parser("show", help="show a task"))
    show.add_argument("task_id")
    show.set_defaults(func=cmd_show)

    enqueue = with_config(commands.add_parser("enqueue", help="enqueue a task"))
    enqueue.add_argument("task_name")
    enqueue.add_argument("--args", help="positional arguments, a JSON array")
    enqueue.add_argument("--kwargs", help="keyword arguments, a JSON object")
    enqueue.add_argument("--idempotency-key")
    enqueue.add_argument(
        "--delay-s", type=float, metavar="SECONDS", help="run no earlier than this from now"
    )
    enqueue.add_argument(
        "--eta", metavar="TIME", help="run no earlier than this ISO 8601 time (with offset)"
    )
    enqueue.add_argument(
        "--priority", type=int, metavar="0-9", help="higher priorities run first (default 0)"
    )
    enqueue.set_defaults(func=cmd_enqueue)

    cancel = with_config(commands.add_parser("cancel", help="cancel a task"))
    cancel.add_argument("task_id")
    cancel.set_defaults(func=cmd_cancel)

    with_config(commands.add_parser("metrics", help="queue depth and counts")).set_defaults(
        func=cmd_metrics
    )

    dead = with_config(commands.add_parser("dead-letters", help="list, redrive or purge"))
    dead.add_argument("action", choices=["list", "redrive", "purge"])
    dead.add_argument("--kind", choices=[k.value for k in DeadLetterKind], default="failed")
    dead.add_argument("--ids", nargs="+", help="dead-letter record ids (default: all)")
    dead.add_argument("--limit", type=int, default=100, help="most records to list")
    dead.add_argument("--yes", action="store_true", help="confirm purging a whole queue")
    dead.set_defaults(func=cmd_dead_letters)

    worker = with_config(commands.add_parser("worker", help="run a consumer in this process"))
    worker.add_argument("--handlers", required=True, help="package.module:NAME of the handlers")
    worker.add_argument("--concurrency", type=int)
    worker.add_argument("--graceful-timeout", type=float, default=DEFAULT_GRACEFUL_TIMEOUT_S)
    worker.set_defaults(func=cmd_worker)
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run the command line; return the exit status."""
    stream = out or sys.stdout
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status: int = args.func(args, stream)
    except (_UsageError, ConfigError, InvalidArgument) as e:
        sys.stderr.write(f"taskserve: error: {redact_url(str(e))}\n")
        return EXIT_USAGE
    except TaskserveError as e:
        sys.stderr.write(f"taskserve: {type(e).__name__}: {redact_url(str(e))}\n")
        return EXIT_FAILURE
    return status


if __name__ == "__main__":
    sys.exit(main())
