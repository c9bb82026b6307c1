"""The ``taskserve`` command line.

::

    taskserve --version                        taskserve's and the adapters' versions
    taskserve adapters                         installed adapters and their capabilities
    taskserve check   -c config.yaml           can the broker be reached? (--no-connect:
                                               validate the configuration only)
    taskserve show    -c config.yaml TASK_ID   a task's status, result or error
    taskserve tasks   -c config.yaml [--status S ...] [--limit N] [--before TIME]
                                               the queue's recent tasks, newest first
    taskserve enqueue -c config.yaml NAME --kwargs '{"x": 1}'
    taskserve cancel  -c config.yaml TASK_ID
    taskserve metrics -c config.yaml           queue depth, in flight, dead letters, workers
    taskserve dead-letters list|redrive|purge -c config.yaml [--kind failed] [--ids ...]
    taskserve worker  -c config.yaml --handlers package.module:HANDLERS
                      [--log-level INFO] [--log-format text|json]

Output is for people by default: tables and labelled values, times in the
local time zone (``TZ``). ``--json``, before or after the command's name,
prints the JSON documents scripts read instead (their shape does not depend on
the terminal). Text read from the store is printed with control characters
escaped.

``-c/--config`` is a YAML or JSON file of ``TaskProcessorConfig`` fields, or
JSON text; it defaults to the ``TASKSERVE_CONFIG`` environment variable.
``--key`` selects a section of it by a dotted path
(``applications.0.args.processor`` in a Serve config file; see
:func:`taskserve.config.load_config_data`). An invalid configuration is
reported with every problem, one line each, naming its field.

Every command that reads a configuration or handlers imports from the
working directory first, as ``python -m`` does (not under ``PYTHONSAFEPATH``
or ``python -P``): ``--handlers tasks:HANDLERS`` finds ``./tasks.py``.

Exit status: 0 success, 1 failure (unhealthy broker, unknown task...), 2
invalid usage or configuration.
"""

from __future__ import annotations

import argparse
import base64
import importlib
import json
import math
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, NoReturn, TextIO

from taskserve.adapter import (
    DEFAULT_GRACEFUL_TIMEOUT_S,
    DEFAULT_TASK_LIST_LIMIT,
    MAX_TASK_LIST_LIMIT,
    TaskProcessorAdapter,
    listing_limit,
    listing_states,
)
from taskserve.cli import views
from taskserve.config import TaskProcessorConfig, load_config_data
from taskserve.errors import ConfigError, InvalidArgument, TaskserveError
from taskserve.factory import instantiate_adapter_from_config
from taskserve.logs import add_logging_arguments, configure_logging
from taskserve.models import DeadLetterKind
from taskserve.redaction import redact_url
from taskserve.registry import installed_adapters, resolve_adapter
from taskserve.scheduling import due_time, task_priority

__all__ = [
    "CONFIG_ENV",
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_USAGE",
    "build_parser",
    "load_config",
    "main",
]

CONFIG_ENV = "TASKSERVE_CONFIG"

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class _UsageError(Exception):
    """Bad command-line input (exit status 2)."""


class _InvalidConfig(Exception):
    """A configuration with problems (exit status 2), each printed on its own line."""

    def __init__(self, origin: str, problems: Sequence[str]) -> None:
        super().__init__(f"invalid configuration {origin}: " + "; ".join(problems))
        self.origin = origin
        self.problems = list(problems)


def _dump(value: Any, out: TextIO) -> None:
    # ensure_ascii: a stored string no terminal encoding can show is escaped.
    out.write(json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")


def _terminal_width(out: TextIO) -> int | None:
    """The columns of the terminal ``out`` writes to; None when it is not one
    (a pipe or a file get lines as long as their content)."""
    isatty = getattr(out, "isatty", None)
    if isatty is None or not isatty():
        return None
    return shutil.get_terminal_size().columns


def _import_from_working_directory() -> None:
    """Put the working directory first on ``sys.path``, as ``python -m`` does,
    unless Python runs with ``PYTHONSAFEPATH`` / ``-P``."""
    if sys.flags.safe_path:
        return
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def load_config(source: str | None, key: str | None = None) -> TaskProcessorConfig:
    """The configuration of file or JSON text ``source`` (default: the
    ``TASKSERVE_CONFIG`` variable), optionally its section ``key`` (a dotted
    path). Modules it names are imported from the working directory first.

    Raises an error listing every problem of an invalid configuration, each
    naming its field; ``main`` prints them one per line (exit status 2).
    """
    source = source or os.environ.get(CONFIG_ENV)
    if not source:
        raise _UsageError(f"no configuration: pass --config FILE or set {CONFIG_ENV}")
    is_text = source.lstrip().startswith("{")
    if not is_text and not os.path.isfile(source):
        raise _UsageError(f"--config: no such file '{source}'")
    origin = "in the --config JSON" if is_text else f"in '{source}'"
    if key is not None:
        origin += f", section '{key}'"
    _import_from_working_directory()
    data = load_config_data(source, key)
    try:
        return TaskProcessorConfig.from_dict(data)
    except ConfigError as e:
        raise _InvalidConfig(origin, TaskProcessorConfig.find_problems(data) or [str(e)]) from e


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
    """List installed adapters, their distributions and capabilities (no broker
    connection; each adapter is imported)."""
    dists = {i.alias: i for i in views.installed_adapter_distributions()}
    rows: list[dict[str, Any]] = []
    for alias, entry_point in sorted(installed_adapters().items()):
        found = dists.get(alias)
        row: dict[str, Any] = {
            "alias": alias,
            "target": entry_point.value,
            "distribution": found.distribution if found else None,
            "version": found.version if found else None,
        }
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
    else:
        out.write(views.adapters_view(rows, width=_terminal_width(out)))
    return EXIT_OK


def cmd_check(args: argparse.Namespace, out: TextIO) -> int:
    """Connect and report the broker's health; with ``--no-connect``, validate
    the configuration and import its adapter only."""
    config = load_config(args.config, args.key)
    assert config.adapter is not None  # set by validation
    if args.no_connect:
        adapter_cls = resolve_adapter(config.adapter)
        alias = adapter_cls.alias or adapter_cls.__name__
        if args.json:
            _dump({"adapter": alias, "queue": config.queue_name, "valid": True}, out)
        else:
            dists = {i.alias: i for i in views.installed_adapter_distributions()}
            out.write(views.validated_view(alias, dists.get(alias), config.queue_name))
        return EXIT_OK
    adapter = instantiate_adapter_from_config(config)
    try:
        report = adapter.health_check_sync()
    finally:
        adapter.shutdown()
    if args.json:
        _dump({"adapter": adapter.alias, "queue": config.queue_name, **report.model_dump()}, out)
    else:
        out.write(views.health_view(adapter.alias, config.queue_name, report))
    return EXIT_OK if report.healthy else EXIT_FAILURE


def cmd_show(args: argparse.Namespace, out: TextIO) -> int:
    """Print a task's status record."""
    adapter = _adapter(args)
    try:
        task = adapter.get_task_status_sync(args.task_id)
    finally:
        adapter.shutdown()
    if args.json:
        _dump(task.model_dump(mode="json"), out)
    else:
        out.write(views.task_view(task))
    return EXIT_OK


def _before_arg(text: str | None) -> float | None:
    """``--before``: a unix time in seconds, or an ISO 8601 time with an offset."""
    if text is None:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            raise InvalidArgument(f"--before must be a finite unix time, got {text!r:.50}")
        return seconds
    try:
        when = datetime.fromisoformat(text)
    except ValueError as e:
        raise InvalidArgument(
            "--before must be a unix time or an ISO 8601 time with an offset "
            f"(e.g. 2026-01-31T12:00:00Z): {e}"
        ) from e
    if when.tzinfo is None or when.utcoffset() is None:
        raise InvalidArgument(
            f"--before needs an offset (e.g. 2026-01-31T12:00:00+01:00), got {text!r:.50}"
        )
    return when.timestamp()


def cmd_tasks(args: argparse.Namespace, out: TextIO) -> int:
    """List the queue's recent tasks, newest first."""
    states = listing_states(args.status) if args.status else None  # refused before connecting
    limit = listing_limit(args.limit)
    before = _before_arg(args.before)
    adapter = _adapter(args)
    try:
        tasks = adapter.list_tasks_sync(states, limit, before)
    finally:
        adapter.shutdown()
    if args.json:
        _dump([task.model_dump(mode="json") for task in tasks], out)
    else:
        out.write(views.tasks_view(tasks, limit=limit, width=_terminal_width(out)))
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
    if args.json:
        _dump(result.model_dump(mode="json"), out)
    else:
        out.write(views.task_view(result))
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace, out: TextIO) -> int:
    """Cancel a task."""
    adapter = _adapter(args)
    try:
        outcome = adapter.cancel_task_sync(args.task_id)
    finally:
        adapter.shutdown()
    if args.json:
        _dump(outcome.model_dump(mode="json"), out)
    else:
        out.write(views.cancel_view(outcome))
    return EXIT_OK


def cmd_metrics(args: argparse.Namespace, out: TextIO) -> int:
    """Print the queue's depth, in-flight count, dead-letter counts and workers."""
    adapter = _adapter(args)
    try:
        metrics = adapter.get_metrics_sync()
    finally:
        adapter.shutdown()
    if args.json:
        _dump(metrics.model_dump(mode="json"), out)
    else:
        out.write(views.metrics_view(metrics, width=_terminal_width(out)))
    return EXIT_OK


def cmd_dead_letters(args: argparse.Namespace, out: TextIO) -> int:
    """List, redrive or purge dead letters."""
    kind = DeadLetterKind(args.kind)
    ids = list(args.ids) if args.ids else None
    if args.action == "purge" and ids is None and not args.yes:
        raise _UsageError("purging a whole dead-letter queue needs --yes (or pass --ids)")
    width = _terminal_width(out)
    adapter = _adapter(args)
    try:
        if args.action == "list":
            records = adapter.list_dead_letters_sync(kind, args.limit)
            if ids is not None:
                records = [r for r in records if r.id in ids]
            if args.json:
                _dump(
                    [r.model_dump(mode="json", exclude={"raw"}) | _raw(r.raw) for r in records],
                    out,
                )
            else:
                out.write(views.dead_letters_view(records, width=width))
        elif args.action == "redrive":
            outcome = adapter.redrive_dead_letters_sync(ids, kind)
            pairs = list(zip(outcome.dead_letter_ids, outcome, strict=True))
            if args.json:
                _dump(
                    {
                        "redriven": [
                            {"dead_letter_id": rec, "task_id": t.id, "retried_from": t.retried_from}
                            for rec, t in pairs
                        ],
                        "not_redriven": [n.model_dump() for n in outcome.not_redriven],
                    },
                    out,
                )
            else:
                refused = [(n.id, n.reason) for n in outcome.not_redriven]
                out.write(views.redrive_view(pairs, refused, width=width))
        else:
            purged = adapter.purge_dead_letters_sync(kind, ids)
            if args.json:
                _dump({"purged": purged}, out)
            else:
                out.write(f"purged {purged} {kind.value} dead letter{'' if purged == 1 else 's'}\n")
    finally:
        adapter.shutdown()
    return EXIT_OK


def _raw(raw: bytes | None) -> dict[str, Any]:
    return {"raw_base64": base64.b64encode(raw).decode() if raw else None}


def _load_handlers(spec: str) -> dict[str, Callable[..., Any]]:
    """The handlers ``module:NAME`` names, imported from the working directory
    first; a module or attribute that does not exist is a usage error naming it
    (an error raised while the module runs keeps its traceback)."""
    from taskserve.worker import load_handlers

    module_name, sep, attr = spec.partition(":")
    if not (sep and module_name and attr):
        raise _UsageError(f"--handlers must look like 'package.module:NAME', got '{spec}'")
    _import_from_working_directory()
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        missing = e.name or module_name
        if module_name != missing and not module_name.startswith(f"{missing}."):
            raise  # the module exists; something it imports does not
        raise _UsageError(
            f"--handlers {spec}: no module named '{missing}' in the working directory "
            f"({os.getcwd()}) or the installed packages"
        ) from e
    if not hasattr(module, attr):
        raise _UsageError(f"--handlers {spec}: module '{module_name}' has no attribute '{attr}'")
    return load_handlers(spec)


def cmd_worker(args: argparse.Namespace, out: TextIO) -> int:
    """Consume the queue in this process until SIGTERM/SIGINT, logging to
    standard error at ``--log-level`` in ``--log-format`` (each line naming
    the task it was logged for; see :mod:`taskserve.logs`)."""
    from taskserve.worker import run_worker

    configure_logging(args.log_level, args.log_format)
    config = load_config(args.config, args.key)  # before the handlers' (maybe slow) import
    run_worker(
        config,
        _load_handlers(args.handlers),
        concurrency=args.concurrency,
        graceful_timeout_s=args.graceful_timeout,
    )
    return EXIT_OK


# -- parser ---------------------------------------------------------------------
class _VersionAction(argparse.Action):
    """``--version``: print taskserve's and every adapter's version, then exit 0."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> NoReturn:
        sys.stdout.write(views.versions_text())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``taskserve`` command."""
    parser = argparse.ArgumentParser(
        prog="taskserve",
        description="Inspect and operate taskserve queues.",
        epilog=(
            f"--config defaults to ${CONFIG_ENV}. Times are shown in the local time zone "
            "(set TZ to choose another, e.g. TZ=UTC)."
        ),
    )
    parser.add_argument(
        "--version",
        action=_VersionAction,
        help="print the versions of taskserve and of the installed adapters, and exit",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_json(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
        # SUPPRESS: without the flag here, the one given before the command stands.
        sub.add_argument(
            "--json", action="store_true", default=argparse.SUPPRESS, help="print JSON"
        )
        return sub

    def with_config(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sub.add_argument("-c", "--config", help="YAML or JSON file of TaskProcessorConfig, or JSON")
        sub.add_argument(
            "--key",
            metavar="DOTTED.PATH",
            help="use this section of the config file (e.g. applications.0.args.processor)",
        )
        return sub

    adapters = with_json(
        commands.add_parser("adapters", help="list installed adapters and capabilities")
    )
    adapters.set_defaults(func=cmd_adapters)

    check = with_json(with_config(commands.add_parser("check", help="check the broker")))
    check.add_argument(
        "--no-connect",
        action="store_true",
        help="validate the configuration and import its adapter, without contacting the broker",
    )
    check.set_defaults(func=cmd_check)

    show = with_json(with_config(commands.add_parser("show", help="show a task")))
    show.add_argument("task_id")
    show.set_defaults(func=cmd_show)

    tasks = with_json(
        with_config(commands.add_parser("tasks", help="list the queue's recent tasks"))
    )
    tasks.add_argument(
        "--status",
        nargs="+",
        action="extend",
        metavar="STATE",
        help="only tasks in these states (PENDING, STARTED, RETRY, SUCCESS, FAILURE, CANCELLED)",
    )
    tasks.add_argument(
        "--limit",
        type=int,
        default=DEFAULT_TASK_LIST_LIMIT,
        help=f"most tasks to list, 1 to {MAX_TASK_LIST_LIMIT} (default {DEFAULT_TASK_LIST_LIMIT})",
    )
    tasks.add_argument(
        "--before",
        metavar="TIME",
        help="only tasks created before this unix time or ISO 8601 time (with offset): "
        "the next page after a task's created_at",
    )
    tasks.set_defaults(func=cmd_tasks)

    enqueue = with_json(with_config(commands.add_parser("enqueue", help="enqueue a task")))
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

    cancel = with_json(with_config(commands.add_parser("cancel", help="cancel a task")))
    cancel.add_argument("task_id")
    cancel.set_defaults(func=cmd_cancel)

    metrics = with_json(with_config(commands.add_parser("metrics", help="queue counts, workers")))
    metrics.set_defaults(func=cmd_metrics)

    dead = with_json(with_config(commands.add_parser("dead-letters", help="list, redrive, purge")))
    dead.add_argument("action", choices=["list", "redrive", "purge"])
    dead.add_argument("--kind", choices=[k.value for k in DeadLetterKind], default="failed")
    dead.add_argument("--ids", nargs="+", help="dead-letter record ids (default: all)")
    dead.add_argument("--limit", type=int, default=100, help="most records to list")
    dead.add_argument("--yes", action="store_true", help="confirm purging a whole queue")
    dead.set_defaults(func=cmd_dead_letters)

    worker = with_config(commands.add_parser("worker", help="run a consumer in this process"))
    worker.add_argument(
        "--handlers",
        required=True,
        help="module:NAME of the handlers (a mapping or list); ./module.py is found",
    )
    worker.add_argument("--concurrency", type=int)
    worker.add_argument("--graceful-timeout", type=float, default=DEFAULT_GRACEFUL_TIMEOUT_S)
    add_logging_arguments(worker)
    worker.set_defaults(func=cmd_worker)
    return parser


def _error(text: str) -> None:
    sys.stderr.write(redact_url(text) + "\n")


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run the command line; return the exit status."""
    stream = out or sys.stdout
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status: int = args.func(args, stream)
    except _InvalidConfig as e:
        count = len(e.problems)
        _error(
            f"taskserve: error: invalid configuration {e.origin} "
            f"({count} problem{'' if count == 1 else 's'}):"
        )
        for problem in e.problems:
            _error(f"  {problem}")
        return EXIT_USAGE
    except (_UsageError, ConfigError, InvalidArgument) as e:
        _error(f"taskserve: error: {e}")
        return EXIT_USAGE
    except TaskserveError as e:
        _error(f"taskserve: {type(e).__name__}: {e}")
        return EXIT_FAILURE
    return status
