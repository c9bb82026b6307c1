"""The command line of ``python -m bench``."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from bench.compare import summaries
from bench.plot import plot
from bench.plot_batching import plot_batching
from bench.report import write
from bench.results import Results
from bench.settings import PRESETS
from bench.suite import SCENARIOS, Suite, select_groups

HERE = Path(__file__).resolve().parent
NOTES = HERE / "PROFILING.md"
"""Hand-written analysis appended to the report."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=(
            "Benchmark every taskserve adapter against its raw engine and Ray Serve's "
            "built-in adapter; write RESULTS.md, results.json and throughput.png."
        ),
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a short run (one repetition)")
    size.add_argument("--smoke", action="store_true", help="a few tasks, to check the harness")
    parser.add_argument(
        "--only", help="adapters/brokers to run, comma-separated (e.g. 'sqlite,celery/redis')"
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated subset of {', '.join(SCENARIOS)} (default: all)",
    )
    parser.add_argument("--repetitions", type=int, help="repetitions per system and task")
    parser.add_argument("--tasks", type=int, help="N tasks per run instead of sizing it")
    parser.add_argument("--output", type=Path, default=HERE, help="where to write the results")
    parser.add_argument(
        "--report-only", action="store_true", help="re-render from OUTPUT/results.json"
    )
    return parser


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    """Run the benchmarks (or re-render a report) and write the results."""
    args = _parser().parse_args(argv)
    output: Path = args.output
    output.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        results = Results.load(output / "results.json")
    else:
        preset = "quick" if args.quick else "smoke" if args.smoke else "full"
        settings = PRESETS[preset].with_overrides(args.repetitions, args.tasks)
        scenarios = [name.strip() for name in args.scenarios.split(",") if name.strip()]
        unknown = sorted(set(scenarios) - set(SCENARIOS))
        if unknown:
            raise SystemExit(
                f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}"
            )
        groups = select_groups(args.only.split(",") if args.only else None)
        workdir = Path(tempfile.mkdtemp(prefix="taskserve-bench-"))
        suite = Suite(settings, workdir, _log, lambda r: r.save(output / "results.json"))
        try:
            results = suite.run(groups, scenarios)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    found = summaries(results.runs)
    if found:
        plot(found, output / "throughput.png")
    if results.batching:
        plot_batching(results.batching, output / "batching.png")
    write(results, output / "RESULTS.md", NOTES)
    _log(f"results written to {output}")
