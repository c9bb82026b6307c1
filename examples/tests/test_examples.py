"""The examples, end to end, as their documentation starts them.

Each example runs as its own process (``python examples/quickstart.py``,
``serve run config.yaml`` ...) on a real Ray and Serve, which it starts
itself: on a private Ray temp dir (``RAY_TMPDIR``), so that it never joins or
disturbs another Ray of the machine, such as the Serve test groups' own. The
tests make real HTTP calls, see a task reach SUCCESS, stop the example as a
user does (Ctrl-C: SIGINT to its process group) and check what it printed: no
traceback, no error line, no Serve warning about replicas it cannot schedule,
and no Ray process left behind. The ``serve run`` tests give Ray two CPUs
(``RAY_OVERRIDE_RESOURCES``), whatever the machine has, since the configs
promise to fit a 2-CPU machine.

Static checks of the deploy story (the config files as Serve validates them,
every commented adapter variant, the Dockerfile's inputs) need no Ray.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from taskserve_conformance.ports import free_port
from taskserve_conformance.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
DEPLOY = EXAMPLES / "deploy"
PYTHON = sys.executable
SERVE = str(Path(sys.executable).with_name("serve"))

pytestmark = pytest.mark.xdist_group("examples")
"""One example at a time: each starts a whole Ray of its own."""

START_TIMEOUT_S = 120.0
"""Bound for an example to start Ray and Serve and deploy its application."""
TASK_TIMEOUT_S = 60.0
"""Bound for a submitted task to finish."""
STOP_TIMEOUT_S = 60.0
"""Bound for an example to stop after Ctrl-C (Serve drains replicas first)."""
POLL_S = 0.2
"""How often a wait re-checks (each check of the Ray processes reads /proc)."""

UNCLEAN_OUTPUT = {
    "a traceback": re.compile(r"Traceback \(most recent call last\)"),
    "an error line": re.compile(r"\bERROR\b|\bError:|\bException\b"),
    "a replica Serve cannot schedule": re.compile(r"to be scheduled|cannot be scheduled"),
}
"""What an example's output must not hold (Ray's and Serve's warnings about
replicas waiting for resources included)."""
RAY_SHUTDOWN_NOTICE = re.compile(
    r"^\(raylet\) Task ServeController\.graceful_shutdown failed\. There are infinite retries "
    r"remaining, so the task will be retried\. Error: The actor is dead because it was "
    r"killed by `ray\.kill`\.$"
)
"""The one error-looking line allowed: the raylet's, when ``serve.shutdown()``
(what ``serve run`` calls on Ctrl-C) kills the controller once Serve has stopped."""
SCRUBBED_ENV = (
    "RAY_ADDRESS",
    "RAY_OVERRIDE_RESOURCES",
    "RAY_SERVE_DEFAULT_HTTP_HOST",
    "TASKSERVE_EXAMPLE_CONFIG",
)
"""Variables of the test's own environment that would change where an example
runs: each example starts its own Ray, on sqlite, listening on 127.0.0.1."""
TWO_CPUS = json.dumps({"CPU": 2})
"""``RAY_OVERRIDE_RESOURCES`` of a 2-CPU machine, whatever this one has."""
ANSI = re.compile(r"\x1b\[[0-9;]*m")


# -- running an example ---------------------------------------------------------------
def ray_processes(ray_dir: Path) -> list[int]:
    """Pids of the live processes started on the Ray temp dir ``ray_dir``: the
    example's Ray (GCS, raylet, dashboard, workers, replicas) inherits its
    ``RAY_TMPDIR`` from the example, and no other process has it."""
    marker = f"RAY_TMPDIR={ray_dir}".encode()
    found: list[int] = []
    if not Path("/proc").is_dir():
        return found  # no process table to read (not Linux)
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if marker in (proc / "environ").read_bytes().split(b"\0"):
                found.append(int(proc.name))
    return found


def _ctrl_c_as_in_a_terminal() -> None:
    """In the example's process, before it starts: SIGINT does what it does in
    a terminal. A shell without job control starts its background commands
    with SIGINT ignored, and an ignored signal stays ignored across exec, so
    an example started from such a test run would never see its Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Example:
    """One example process: its output, collected as it comes, and its end."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.argv = argv
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,  # its own process group, as a terminal gives it
            preexec_fn=_ctrl_c_as_in_a_terminal,
        )
        self.lines: list[str] = []
        self.times: list[float] = []
        """Seconds from the start to each line of ``lines``."""
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(ANSI.sub("", line.rstrip("\n")))
                self.times.append(self.elapsed())
                self._changed.notify_all()

    @property
    def text(self) -> str:
        """What the example printed."""
        with self._changed:
            return "\n".join(self.lines)

    @property
    def output(self) -> str:
        """What the example printed, each line with its time from the start."""
        with self._changed:
            return "\n".join(
                f"[{at:5.1f}s] {line}" for at, line in zip(self.times, self.lines, strict=True)
            )

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def wait_for_line(self, pattern: str, timeout_s: float = START_TIMEOUT_S) -> re.Match[str]:
        """The first output line matching ``pattern``; fails if the example ends
        or ``timeout_s`` passes first."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                for line in self.lines:
                    match = regex.search(line)
                    if match:
                        return match
                if self.process.poll() is not None and not self._reader.is_alive():
                    raise AssertionError(
                        f"{self} ended (status {self.process.returncode}) before printing "
                        f"{pattern!r}:\n{self.output}"
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{self} printed no {pattern!r}:\n{self.output}")
                self._changed.wait(min(remaining, 0.5))

    def interrupt(self) -> None:
        """Ctrl-C: SIGINT to the whole process group, as a terminal sends it."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGINT)

    def wait(self, timeout_s: float) -> int:
        """The exit status; fails if the example is still running after ``timeout_s``."""
        try:
            status = self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self} still running {timeout_s:.0f}s later:\n{self.output}"
            ) from None
        self._reader.join(10)
        return status

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)

    def assert_clean(self) -> None:
        for what, pattern in UNCLEAN_OUTPUT.items():
            bad = [
                line
                for line in self.lines
                if pattern.search(line) and not RAY_SHUTDOWN_NOTICE.match(line)
            ]
            assert not bad, f"{self} printed {what}: {bad[0]!r}\n{self.output}"

    def __str__(self) -> str:
        return "`" + " ".join(Path(arg).name if "/" in arg else arg for arg in self.argv) + "`"


@pytest.fixture
def ray_dir() -> Iterator[Path]:
    """A private Ray temp dir, short enough for Ray's socket paths; afterwards
    no Ray process on it may remain (any left is killed, and the test fails)."""
    root = "/tmp" if Path("/tmp").is_dir() else None
    path = Path(tempfile.mkdtemp(prefix="tsx-", dir=root))
    yield path
    try:
        wait_until(
            lambda: not ray_processes(path),
            20,
            f"the Ray processes on {path} did not end",
            interval=POLL_S,
        )
    finally:
        for pid in ray_processes(path):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def start(
    ray_dir: Path, tmp_path: Path, record_property: Callable[[str, object], None]
) -> Iterator[Callable[..., Example]]:
    """Start an example (argv, cwd, extra environment); it is killed at the end
    if the test left it running, and its run time is recorded."""
    started: list[Example] = []

    def run(argv: list[str], cwd: Path = REPO, **env: str) -> Example:
        environment = {key: value for key, value in os.environ.items() if key not in SCRUBBED_ENV}
        environment.update(
            RAY_TMPDIR=str(ray_dir),
            TMPDIR=str(ray_dir),  # the examples' own temporary folders, removed after
            RAY_USAGE_STATS_ENABLED="0",
            PYTHONUNBUFFERED="1",
            TASKSERVE_EXAMPLE_SQLITE_PATH=str(tmp_path / "example.db"),
        )
        environment.update(env)
        example = Example(argv, cwd, environment)
        started.append(example)
        return example

    yield run
    for example in started:
        if example.process.poll() is None:
            example.kill()
        record_property(f"run_s {example}", round(example.elapsed(), 1))


def document(tmp_path: Path) -> str:
    """A small text document on disk; its file URL."""
    path = tmp_path / "guide.txt"
    path.write_text("Asynchronous inference decouples request lifetime from compute time. " * 2)
    return path.as_uri()


def wait_for_success(http: httpx.Client, status_path: str) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        record: dict[str, Any] = http.get(status_path).json()
        return record if record["status"] in ("SUCCESS", "FAILURE", "CANCELLED") else None

    record = wait_until(finished, TASK_TIMEOUT_S, f"{status_path} did not finish", interval=POLL_S)
    assert record["status"] == "SUCCESS", record
    return record


def submit_when_ready(http: httpx.Client, path: str, body: dict[str, Any], run: Example) -> str:
    """POST ``body`` once the application answers (404/503 until it is
    deployed); the task id."""

    def accepted() -> httpx.Response | None:
        assert run.process.poll() is None, f"{run} ended:\n{run.output}"
        with contextlib.suppress(httpx.TransportError):
            response = http.post(path, json=body)
            if response.status_code not in (404, 503):
                return response
        return None

    response = wait_until(accepted, START_TIMEOUT_S, f"{run} did not serve {path}", interval=POLL_S)
    assert response.status_code in (200, 202), response.text
    task_id = response.json()["task_id"]
    assert isinstance(task_id, str)
    return task_id


def stop(run: Example) -> None:
    """Ctrl-C; the example must end with status 0 and clean output."""
    run.interrupt()
    status = run.wait(STOP_TIMEOUT_S)
    assert status == 0, f"{run} ended with status {status}:\n{run.output}"
    run.assert_clean()


# -- the examples ---------------------------------------------------------------------
def test_quickstart(start: Callable[..., Example]) -> None:
    """``make quickstart``: four documents over HTTP, one through the client."""
    run = start([PYTHON, "examples/quickstart.py"], TASKSERVE_QUICKSTART_PORT=str(free_port()))
    status = run.wait(START_TIMEOUT_S + TASK_TIMEOUT_S)
    assert status == 0, f"{run} ended with status {status}:\n{run.output}"
    run.assert_clean()
    assert re.search(r"^\[4/4 done\]( \w+:SUCCESS ?)+$", run.text, re.M), run.output
    assert re.search(r"via taskserve\.client: task \S+ -> indexed", run.text), run.output


def test_pdf_template(start: Callable[..., Example]) -> None:
    """The PDF template's runner: its server, and its client's two tasks."""
    run = start([PYTHON, "examples/pdf_template/run.py"], TASKSERVE_EXAMPLE_PORT=str(free_port()))
    status = run.wait(START_TIMEOUT_S + TASK_TIMEOUT_S)
    assert status == 0, f"{run} ended with status {status}:\n{run.output}"
    run.assert_clean()
    assert "Task status: SUCCESS" in run.text, run.output
    assert run.text.count("✓ Complete!") == 2, run.output
    assert "Pages: 2" in run.text, run.output


def test_embeddings(start: Callable[..., Example]) -> None:
    """``python examples/embeddings/run.py``: 64 documents embedded by a batched
    handler in fewer calls than tasks, a bad task failing alone, and a question's
    nearest document of its topic."""
    run = start([PYTHON, "examples/embeddings/run.py"], TASKSERVE_EXAMPLE_PORT=str(free_port()))
    status = run.wait(START_TIMEOUT_S + TASK_TIMEOUT_S)
    assert status == 0, f"{run} ended with status {status}:\n{run.output}"
    run.assert_clean()
    calls = re.search(r"^embedded 64 documents in (\d+) handler calls", run.text, re.M)
    assert calls is not None and int(calls.group(1)) < 64, run.output
    assert "the task without a text failed alone: embed takes text=" in run.text, run.output
    assert re.search(r"^  0\.\d{3}  \[astronomy\] ", run.text, re.M), run.output


def test_document_indexing(start: Callable[..., Example], tmp_path: Path) -> None:
    """``python examples/document_indexing.py``: the guide's application, as
    written, until Ctrl-C."""
    port = free_port()
    run = start([PYTHON, "examples/document_indexing.py"], TASKSERVE_EXAMPLE_PORT=str(port))
    run.wait_for_line(rf"Document indexing is running: POST http://127\.0\.0\.1:{port}/submit")
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        body = {"document_id": "guide", "document_url": document(tmp_path)}
        response = http.post("/submit", json=body)
        assert response.status_code == 200, response.text
        record = wait_for_success(http, f"/status/{response.json()['task_id']}")
    assert record["result"]["metadata"]["words"] == 16, record
    stop(run)


def test_document_indexing_names_what_to_change_on_a_small_ray(
    start: Callable[..., Example],
) -> None:
    """A Ray too small for the guide's three replicas: a message, at once,
    instead of Serve waiting for ever."""
    run = start(
        [PYTHON, "examples/document_indexing.py"],
        TASKSERVE_EXAMPLE_PORT=str(free_port()),
        RAY_OVERRIDE_RESOURCES=json.dumps({"CPU": 2}),
    )
    assert run.wait(START_TIMEOUT_S) == 1, run.output
    assert "the deployments ask for 3 CPUs" in run.text, run.output
    assert "this Ray cluster has 2" in run.text, run.output
    assert "num_cpus" in run.text, run.output
    assert "Traceback" not in run.text, run.output


def serve_config_copy(source: Path, tmp_path: Path, port: int) -> Path:
    """``source`` with its HTTP port, and every sqlite path, moved to this test's."""
    config = yaml.safe_load(source.read_text())
    config["http_options"]["port"] = port
    for app in config["applications"]:
        env = app.get("runtime_env", {}).get("env_vars", {})
        if "TASKSERVE_EXAMPLE_SQLITE_PATH" in env:
            env["TASKSERVE_EXAMPLE_SQLITE_PATH"] = str(tmp_path / "serve-example.db")
        processor = app.get("args", {}).get("task_processor_config")
        if isinstance(processor, dict) and processor.get("adapter") == "sqlite":
            processor["adapter_config"]["path"] = str(tmp_path / "deploy.db")
    copy = tmp_path / source.name
    copy.write_text(yaml.safe_dump(config))
    return copy


def test_serve_run_document_indexing_config(start: Callable[..., Example], tmp_path: Path) -> None:
    """``serve run document_indexing_serve.yaml``: the guide's application on
    two CPUs, its replicas resized by the config file alone."""
    port = free_port()
    config = serve_config_copy(EXAMPLES / "document_indexing_serve.yaml", tmp_path, port)
    run = start([SERVE, "run", str(config)], cwd=EXAMPLES, RAY_OVERRIDE_RESOURCES=TWO_CPUS)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        body = {"document_id": "guide", "document_url": document(tmp_path)}
        task_id = submit_when_ready(http, "/submit", body, run)
        record = wait_for_success(http, f"/status/{task_id}")
    assert record["result"]["metadata"]["words"] == 16, record
    stop(run)


def test_serve_run_deploy_config(start: Callable[..., Example], tmp_path: Path) -> None:
    """``serve run config.yaml`` in examples/deploy: the application built from
    the config's ``args``, on two CPUs."""
    port = free_port()
    config = serve_config_copy(DEPLOY / "config.yaml", tmp_path, port)
    run = start([SERVE, "run", str(config)], cwd=DEPLOY, RAY_OVERRIDE_RESOURCES=TWO_CPUS)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        body = {
            "task_name": "index_document",
            "kwargs": {"document_id": "d1", "text": "Queues decouple queues from work. " * 3},
        }
        task_id = submit_when_ready(http, "/submit", body, run)
        wait_for_success(http, f"/status/{task_id}")
        record = http.get(f"/get/{task_id}").json()
        assert record["status"] == "SUCCESS", record
        assert http.get("/health").status_code == 200
        # Without TASKSERVE_ADMIN_TOKEN the admin routes are not served.
        assert http.get("/dead-letters").status_code == 404
    assert record["result"]["words"] == 15, record
    assert record["result"]["top_terms"][0] == "queues", record
    stop(run)


# -- the deploy story, statically -----------------------------------------------------
def serve_schema(config: dict[str, Any]) -> Any:
    from ray.serve.schema import ServeDeploySchema

    return ServeDeploySchema.model_validate(config)


@pytest.mark.parametrize(
    "path", [DEPLOY / "config.yaml", EXAMPLES / "document_indexing_serve.yaml"], ids=str
)
def test_serve_config_files_validate(path: Path) -> None:
    """What ``serve deploy`` sends: each file is a valid Serve config."""
    schema = serve_schema(yaml.safe_load(path.read_text()))
    assert len(schema.applications) == 1


def commented_variants(text: str) -> list[tuple[str, str]]:
    """The commented-out YAML blocks of a file, uncommented: (first line, block).

    A block starts with an indented comment ``# key: ...`` and goes on while the comment
    lines at its indentation hold a sibling key or something more indented.
    """
    variants: list[tuple[str, str]] = []
    block: list[str] = []
    indent = ""
    for line in [*text.splitlines(), ""]:
        if block:
            more = re.match(rf"^{re.escape(indent)}# ([a-z_]+:(?:\s.*)?|  +\S.*)$", line)
            if more:
                block.append(more.group(1))
                continue
            variants.append((block[0], "\n".join(block)))
            block = []
        first = re.match(r"^(\s+)# ([a-z_]+:(?:\s.*)?)$", line)  # not the header's prose
        if first:
            indent, block = first.group(1), [first.group(2)]
    return variants


def test_deploy_config_variants_are_valid_configs() -> None:
    """Every commented adapter variant of config.yaml, put in place of the
    sqlite one, is a valid TaskProcessorConfig; the autoscaling variant, in
    place of ``num_replicas``, a valid Serve config."""
    from taskserve import TaskProcessorConfig

    text = (DEPLOY / "config.yaml").read_text()
    config = yaml.safe_load(text)
    app = config["applications"][0]
    variants = commented_variants(text)
    adapters = sorted(first for first, _ in variants if first.startswith("adapter:"))
    assert adapters == [
        "adapter: celery",
        "adapter: celery",
        "adapter: dramatiq",
        "adapter: postgres",
        "adapter: rq",
    ], variants
    tried = 0
    for key, block in variants:
        variant = yaml.safe_load(block)
        if key.startswith("adapter:"):
            processor = {**app["args"]["task_processor_config"], **variant}
            assert TaskProcessorConfig.find_problems(processor) == [], block
            TaskProcessorConfig.load(processor)
        elif key.startswith("task_processor_config:"):
            assert variant["task_processor_config"].endswith(".yaml"), block
        elif key.startswith("autoscaling_config:"):
            indexer = dict(app["deployments"][0])
            indexer.pop("num_replicas")
            indexer.update(variant)
            changed = {**app, "deployments": [indexer, *app["deployments"][1:]]}
            serve_schema({**config, "applications": [changed]})
            # Serve takes unknown policy keys silently: check what it will run.
            from ray.serve.config import AutoscalingConfig

            from taskserve.serve.autoscaling import QueueDepthAutoscalingPolicy

            policy = AutoscalingConfig.model_validate(variant["autoscaling_config"]).policy
            module, _, name = str(policy.policy_function).partition(":")
            assert getattr(importlib.import_module(module), name) is QueueDepthAutoscalingPolicy
            QueueDepthAutoscalingPolicy(**policy.policy_kwargs)
        else:
            raise AssertionError(f"a commented block nothing checks: {block}")
        tried += 1
    assert tried == 7, variants


def load_deploy_app() -> Any:
    spec = importlib.util.spec_from_file_location("deploy_app", DEPLOY / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_deploy_app_reads_its_config_from_args(tmp_path: Path) -> None:
    """``build_app`` takes the TaskProcessorConfig as a mapping or a file path,
    and refuses missing or unknown arguments naming the one it takes."""
    from taskserve import ConfigError

    app = load_deploy_app()
    fields = {"queue_name": "q", "adapter": "sqlite", "adapter_config": {"path": "x.db"}}
    assert app.processor_config({"task_processor_config": fields}).queue_name == "q"
    path = tmp_path / "queue.yaml"
    path.write_text(yaml.safe_dump(fields))
    assert app.processor_config({"task_processor_config": str(path)}).queue_name == "q"
    for bad in ({}, {"task_processor_config": fields, "processor": {}}):
        with pytest.raises(ConfigError, match="one argument, 'task_processor_config'"):
            app.processor_config(bad)
    with pytest.raises(ConfigError, match="queue_name"):
        app.processor_config({"task_processor_config": {"adapter": "sqlite"}})
    from ray.serve import Application

    assert isinstance(app.build_app({"task_processor_config": str(path)}), Application)


def test_dockerfile_copies_what_exists() -> None:
    """The image recipe's inputs are in the repository, every distribution is
    installed, and the build context leaves out local state."""
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    sources = [
        part
        for line in dockerfile.splitlines()
        if line.startswith("COPY ")
        for part in line.split()[1:-1]
        if not part.startswith("--")
    ]
    assert sources, dockerfile
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: not in the repository"
    for plugin in sorted(p.name for p in (REPO / "plugins").iterdir() if p.is_dir()):
        assert f"plugins/{plugin}" in dockerfile, f"the image does not install plugins/{plugin}"
    ignored = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert {"**/.venv", "**/__pycache__", "**/*.db"} <= set(ignored), ignored
