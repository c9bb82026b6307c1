"""``python -m taskserve_conformance.chaos``: a chaos run against a configuration.

The configuration file (YAML or JSON) may name ``{redis_url}``, ``{amqp_url}``,
``{postgres_dsn}`` and ``{workdir}``: the run starts those brokers privately
and restarts the message broker once. Prints the report; ``--json`` writes it.
Exits 1 when a task was lost, stuck, wrong, or moved backward.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from taskserve_conformance.chaos.environment import ChaosEnvironment
from taskserve_conformance.chaos.run import ChaosRun, ChaosSettings


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m taskserve_conformance.chaos", description=__doc__
    )
    parser.add_argument("--config", required=True, help="configuration template file")
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--consumers", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=6)
    parser.add_argument("--producers", type=int, default=2)
    parser.add_argument("--work-ms", type=float, default=50.0)
    parser.add_argument("--lease", type=float, default=None, help="override lease_s")
    parser.add_argument("--restart", default="auto", help="auto, none, redis, rabbitmq, postgres")
    parser.add_argument("--json", type=Path, default=None, help="write the report here")
    args = parser.parse_args(argv)
    settings = ChaosSettings(
        tasks=args.tasks,
        consumers=args.consumers,
        concurrency=args.concurrency,
        producers=args.producers,
        work_ms=args.work_ms,
    )
    with tempfile.TemporaryDirectory(prefix="taskserve-chaos-") as tmp:
        workdir = Path(tmp)
        template = Path(args.config).read_text()
        with ChaosEnvironment(template, workdir, restart=args.restart) as environment:
            overrides = {"lease_s": args.lease} if args.lease else {}
            config = environment.config(**overrides)
            broker = environment.restarted
            run = ChaosRun(config, workdir, settings, restart=broker.restart if broker else None)
            report = run.run()
    print(report.line())
    if args.json is not None:
        args.json.write_text(report.to_json())
    broken = report.lost or report.stuck or report.wrong_results or report.backward_moves
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
