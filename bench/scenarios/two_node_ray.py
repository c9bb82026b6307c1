"""Consumer replicas spread over two Ray nodes of this machine, draining one backlog.

Two Ray nodes are started with the command line, a head (``ray start
--head``) and a second node (``ray start --address=<head>``), each with
:data:`NODE_CPUS` logical CPUs and one unit of the custom resource
:data:`NODE_RESOURCE`. They share a temporary directory of their own, so
``ray.init()`` elsewhere on the machine never finds them, and every port
they open is chosen free. Both run with ``--block``: a SIGTERM to a node's
``ray start`` process stops that node's processes and nothing else (``ray
stop`` would stop every Ray of the machine, the test suite's too).

This process connects to the head as a driver and starts Serve; then, for
each node count, taskserve-celery (Redis: a store every node reaches, which
sqlite's file is not in principle) is deployed as the Serve scenarios'
consumer with one replica per node, each replica needing the one unit of
:data:`NODE_RESOURCE` a node has, so no node holds two. Once every replica
consumes, the backlog is drained as in :mod:`bench.scenarios.consumers`: the
replicas' processes (on this machine) are paused, the queue is filled,
they are resumed, and the throughput is taken from the first to the last
SUCCESS. Both nodes share this machine's cores: the figures show what
spreading costs or gains here, not a second machine's worth.

Run it alone with ``python -m bench --quick --only celery/redis --scenarios
consumers --output <directory>`` (about a minute of Ray start-up and
shutdown besides the drains).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.brokers import REDIS
from bench.contenders import TASKSERVE, Contender
from bench.engines.adapters import AdapterTrial
from bench.engines.base import TrialOptions
from bench.process import REPOSITORY
from bench.scenarios.consumers import drain_paused
from bench.scenarios.local_serve import consumer_deployment
from taskserve_conformance.ports import free_port

NODE_CPUS = 2
"""Logical CPUs of each node."""
NODE_RESOURCE = "bench_node"
"""The custom resource each node has one unit of, and each replica needs."""
NODE_COUNTS = (1, 2)
SYSTEM = Contender("celery", REDIS, TASKSERVE)
START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 60.0
TEMP_PREFIX = "tsray-"
"""Kept short: Ray's socket paths under the directory must stay below 108 bytes."""


@dataclass(frozen=True)
class TwoNodeResult:
    """One drain by ``nodes`` replicas, at most one per node; ``replicas_per_node``:
    how many replicas each node that held one ran; ``cpu_s``: each replica
    process's CPU seconds from its resume until the last SUCCESS was seen,
    ``cpu_window_s`` later."""

    key: str
    nodes: int
    replicas_per_node: list[int]
    concurrency: int
    tasks: int
    throughput: float
    drain_s: float
    cpu_s: list[float]
    cpu_window_s: float


def node_commands(
    temp_dir: str, head_port: int, nodes: int, port: Callable[[], int] = free_port
) -> list[list[str]]:
    """The ``ray start --block`` command of the head, then of each other node."""
    ray = [sys.executable, "-m", "ray.scripts.scripts", "start"]

    def common() -> list[str]:
        return [
            f"--num-cpus={NODE_CPUS}",
            f"--resources={json.dumps({NODE_RESOURCE: 1})}",
            f"--temp-dir={temp_dir}",
            f"--dashboard-agent-listen-port={port()}",
            "--disable-usage-stats",
            "--block",
        ]

    head = [
        *ray,
        "--head",
        f"--port={head_port}",
        "--include-dashboard=false",
        f"--dashboard-port={port()}",
        f"--ray-client-server-port={port()}",
        *common(),
    ]
    others = [[*ray, f"--address=127.0.0.1:{head_port}", *common()] for _ in range(nodes - 1)]
    return [head, *others]


def replica_options(nodes: int) -> dict[str, Any]:
    """Serve options of a consumer with one replica on each of ``nodes`` nodes."""
    if nodes < 1:
        raise ValueError("at least one node")
    return {
        "num_replicas": nodes,
        "ray_actor_options": {"num_cpus": 0, "resources": {NODE_RESOURCE: 1}},
    }


def replicas_per_node(node_ids: Sequence[str]) -> list[int]:
    """How many replicas each node holding one runs, most first."""
    counts: dict[str, int] = {}
    for node in node_ids:
        counts[node] = counts.get(node, 0) + 1
    return sorted(counts.values(), reverse=True)


def _node_env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    env.update(
        PYTHONPATH=str(REPOSITORY) + (os.pathsep + path if path else ""),
        RAY_USAGE_STATS_ENABLED="0",
        RAY_AUTH_MODE="disabled",
    )
    return env


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class LocalRayNodes:
    """``nodes`` Ray nodes on this machine, started and stopped as a context
    manager; ``address`` is the head's."""

    def __init__(self, nodes: int, log_dir: Path) -> None:
        self.nodes = nodes
        self.log_dir = log_dir
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.temp_dir = ""
        self._processes: list[subprocess.Popen[bytes]] = []

    def _start(self, argv: list[str], name: str) -> subprocess.Popen[bytes]:
        with (self.log_dir / f"ray-{name}-{self.port}.log").open("ab") as log:
            process = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=_node_env(),
                cwd=REPOSITORY,
                start_new_session=True,
            )
        self._processes.append(process)
        return process

    def _wait(self, ready: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ready():
            dead = [p.args for p in self._processes if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"{what} within {START_TIMEOUT_S:g}s failed; see {self.log_dir}")
            time.sleep(0.2)

    def __enter__(self) -> LocalRayNodes:
        self.temp_dir = tempfile.mkdtemp(prefix=TEMP_PREFIX)
        head, *others = node_commands(self.temp_dir, self.port, self.nodes)
        try:
            self._start(head, "head")
            self._wait(lambda: _answers(self.port), "the head's start")
            for index, argv in enumerate(others, start=1):
                self._start(argv, f"node{index}")
        except BaseException:
            self._stop()
            raise
        return self

    def wait_for_nodes(self) -> None:
        """Return once every node is alive in the cluster this process is connected to."""
        import ray

        def alive() -> bool:
            nodes = ray.nodes()  # type: ignore[no-untyped-call]
            return len([node for node in nodes if node["Alive"]]) >= self.nodes

        self._wait(alive, f"{self.nodes} nodes alive")

    def _stop(self) -> None:
        for process in reversed(self._processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process in reversed(self._processes):
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)  # its own session: this node only
                process.wait()
        if self.temp_dir:
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __exit__(self, *_: object) -> None:
        self._stop()


def _where(_: object) -> tuple[int, str]:
    """Run inside a replica actor: its process id and node id."""
    import ray

    return os.getpid(), ray.get_runtime_context().get_node_id()


def _replica_processes(app: str) -> list[tuple[int, str]]:
    """(pid, node id) of every replica of ``app``'s consumer."""
    import ray

    prefix = f"SERVE_REPLICA::{app}#consumer#"
    handles = [
        ray.get_actor(actor["name"], namespace=actor["namespace"])
        for actor in ray.util.list_named_actors(all_namespaces=True)
        if actor["name"].startswith(prefix)
    ]
    return list(ray.get([handle.__ray_call__.remote(_where) for handle in handles]))


def _drain_on(
    nodes: int, tasks: int, concurrency: int, fill_threads: int, workdir: Path
) -> TwoNodeResult:
    from ray import serve

    run_id = uuid.uuid4().hex[:12]
    markers = workdir / f"markers-{run_id}"
    markers.mkdir(parents=True, exist_ok=True)
    trial = SYSTEM.open(
        TrialOptions(run_id=run_id, concurrency=concurrency, workdir=workdir, markers=markers)
    )
    app = f"bench-{run_id}"
    try:
        if not isinstance(trial, AdapterTrial):
            raise TypeError(f"{SYSTEM.key} is not a taskserve adapter")
        deployment = consumer_deployment(
            trial.config, max_ongoing_requests=concurrency, **replica_options(nodes)
        )
        serve.run(deployment.bind(), name=app, route_prefix=None)
        replicas = _replica_processes(app)
        if len(replicas) != nodes:
            raise RuntimeError(f"{len(replicas)} replicas running, {nodes} deployed")
        pids = [pid for pid, _ in replicas]
        drain = drain_paused(trial, pids, "noop", tasks, fill_threads)
    finally:
        with contextlib.suppress(Exception):
            serve.delete(app)
        trial.close()
    return TwoNodeResult(
        key=SYSTEM.key,
        nodes=nodes,
        replicas_per_node=replicas_per_node([node for _, node in replicas]),
        concurrency=concurrency,
        tasks=tasks,
        throughput=drain.throughput,
        drain_s=drain.drain_s,
        cpu_s=drain.cpu_s,
        cpu_window_s=drain.cpu_window_s,
    )


def drain_on_nodes(
    tasks: int, concurrency: int, fill_threads: int, workdir: Path
) -> list[TwoNodeResult]:
    """Start two Ray nodes, drain ``tasks`` no-op tasks with a replica on one and
    then on each of both, and stop the nodes."""
    import ray
    from ray import serve

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    results = []
    with LocalRayNodes(max(NODE_COUNTS), workdir) as cluster:
        ray.init(address=cluster.address, logging_level=logging.WARNING, log_to_driver=False)
        try:
            cluster.wait_for_nodes()
            serve.start(
                http_options={"host": "127.0.0.1", "port": free_port()},
                logging_config={"log_level": "WARNING"},
            )
            for nodes in NODE_COUNTS:
                results.append(_drain_on(nodes, tasks, concurrency, fill_threads, workdir))
        finally:
            with contextlib.suppress(Exception):
                serve.shutdown()  # type: ignore[no-untyped-call]
            ray.shutdown()
    return results
