"""Run a measurement in a child process whose Redis is a private server.

``run_isolated("bench.scenarios.roundtrips:count_round_trips", {...}, workdir)``
starts a :class:`~bench.redis_private.PrivateRedis`, runs the function in
``python -m bench.isolated`` with ``TASKSERVE_BENCH_REDIS_URL`` pointing at it
(so the producer, the consumer processes and the state stores of every
Redis-backed system use it) and returns what the function returned, as JSON
data. The other brokers stay the machine's.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from bench.process import REPOSITORY
from bench.redis_private import PRIVATE_ENV, PrivateRedis

TIMEOUT_S = 600.0


def run_isolated(
    target: str, kwargs: dict[str, Any], workdir: Path, timeout_s: float = TIMEOUT_S
) -> Any:
    """``module:function(**kwargs)`` in a child process on a private Redis; its result."""
    name = uuid.uuid4().hex[:12]
    output = workdir / f"isolated-{name}.json"
    with PrivateRedis(workdir / f"redis-{name}") as redis:
        path = os.environ.get("PYTHONPATH")
        env = {
            **os.environ,
            "TASKSERVE_BENCH_REDIS_URL": redis.url,
            PRIVATE_ENV: "1",
            "PYTHONPATH": str(REPOSITORY) + (os.pathsep + path if path else ""),
        }
        argv = [sys.executable, "-m", "bench.isolated", target, json.dumps(kwargs), str(output)]
        done = subprocess.run(
            argv, env=env, cwd=REPOSITORY, capture_output=True, text=True, timeout=timeout_s
        )
    if done.returncode != 0:
        tail = "\n".join(done.stderr.splitlines()[-30:])
        raise RuntimeError(f"{target} failed in its child process:\n{tail}")
    return json.loads(output.read_text())


def main(argv: list[str]) -> None:
    """Call ``module:function`` with the JSON keyword arguments; write its result."""
    target, kwargs, output = argv
    module, function = target.split(":")
    result = getattr(importlib.import_module(module), function)(**json.loads(kwargs))
    is_instance = dataclasses.is_dataclass(result) and not isinstance(result, type)
    data = dataclasses.asdict(result) if is_instance else result
    Path(output).write_text(json.dumps(data))


if __name__ == "__main__":
    main(sys.argv[1:])
