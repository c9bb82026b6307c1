"""``python -m bench.chaos``: the full chaos run of every adapter and broker.

For each pair: three consumer processes (concurrency 6, lease 4 s), 10,000
tasks enqueued by two producers while they work, a random consumer SIGKILLed
every one to three seconds and replaced, and one restart of the message
broker (a private persistent Redis with ``appendfsync always``, a RabbitMQ node
of its own restarted with ``stop_app``/``start_app``, a PostgreSQL cluster of
its own; sqlite has no server to restart). The count of each run
(:class:`taskserve_conformance.chaos.ChaosReport`) goes to ``bench/chaos.json``
and the "Chaos runs" section of ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from taskserve_conformance.chaos import ChaosRun, ChaosSettings
from taskserve_conformance.chaos.environment import ChaosEnvironment

HERE = Path(__file__).parent
CHAOS_JSON = HERE / "chaos.json"

PAIRS: dict[str, dict[str, Any]] = {
    "sqlite": {"adapter": "sqlite", "adapter_config": {"path": "{workdir}/chaos.db"}},
    "celery/redis": {"adapter": "celery", "adapter_config": {"broker_url": "{redis_url}"}},
    "celery/rabbitmq": {
        "adapter": "celery",
        "adapter_config": {"broker_url": "{amqp_url}", "backend_url": "{redis_url}"},
    },
    "dramatiq/redis": {"adapter": "dramatiq", "adapter_config": {"broker_url": "{redis_url}"}},
    "dramatiq/rabbitmq": {
        "adapter": "dramatiq",
        "adapter_config": {"broker_url": "{amqp_url}", "state_url": "{redis_url}"},
    },
    "rq/redis": {"adapter": "rq", "adapter_config": {"redis_url": "{redis_url}"}},
    "postgres": {"adapter": "postgres", "adapter_config": {"dsn": "{postgres_dsn}"}},
}
"""Each pair's configuration template (see :mod:`taskserve_conformance.chaos`)."""

TIMINGS = {"queue_name": "chaos", "lease_s": 4.0, "max_retries": 3}


def run_pair(name: str, settings: ChaosSettings) -> dict[str, Any]:
    """One full chaos run of pair ``name``; its report as a dict."""
    with tempfile.TemporaryDirectory(prefix="taskserve-chaos-") as tmp:
        workdir = Path(tmp)
        template = {**TIMINGS, **PAIRS[name]}
        with ChaosEnvironment(template, workdir / "brokers") as environment:
            broker = environment.restarted
            run = ChaosRun(
                environment.config(),
                workdir / "run",
                settings,
                restart=broker.restart if broker is not None else None,
            )
            report = run.run()
    print(f"{name}: {report.line()}", flush=True)
    return {"pair": name, **asdict(report)}


def main(argv: list[str] | None = None) -> None:
    """Run the pairs named by ``--only`` (all by default) and write the results."""
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--only", action="append", help="pair pattern, e.g. 'celery/*'")
    args = parser.parse_args(argv)
    settings = ChaosSettings(tasks=args.tasks, consumers=3, concurrency=6, producers=2)
    names = [n for n in PAIRS if not args.only or any(fnmatch.fnmatch(n, p) for p in args.only)]
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    reports = [run_pair(name, settings) for name in names]
    document = {
        "started": started,
        "settings": {**asdict(settings), **TIMINGS},
        "runs": reports,
    }
    CHAOS_JSON.write_text(json.dumps(document, indent=1) + "\n")
    from bench.cli import NOTES
    from bench.report import write
    from bench.results import Results

    write(Results.load(HERE / "results.json"), HERE / "RESULTS.md", NOTES)
    print(f"wrote {CHAOS_JSON} and {HERE / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
