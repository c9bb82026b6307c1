"""Real consumer processes: spawned, awaited, stopped and killed by tests.

A consumer is ``python -m taskserve.worker`` running the suite's handlers
(:mod:`taskserve_conformance.handlers`) with the journal directory in its
environment, started by :mod:`taskserve_conformance.launcher`.
:class:`ConsumerPool` starts them, waits for their ready line with a bounded
timeout, stops them with SIGTERM (graceful) or SIGKILL (crash), and reaps
every one it started when the test ends.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path

from taskserve import TaskProcessorConfig
from taskserve.worker import READY_LINE
from taskserve_conformance.configs import config_to_json
from taskserve_conformance.journal import Journal
from taskserve_conformance.launcher import ProcessHandle, launch

HANDLERS_SPEC = "taskserve_conformance.handlers:HANDLERS"
"""The ``--handlers`` argument of every consumer process."""

BATCH_HANDLERS_SPEC = "taskserve_conformance.handlers:BATCH_HANDLERS"
"""The ``--handlers`` argument of the batching group's consumer processes."""

DEFAULT_GRACEFUL_TIMEOUT_S = 30.0
"""Graceful timeout of consumer processes unless a test sets one."""


class ConsumerStartError(RuntimeError):
    """A consumer process exited or stayed silent instead of becoming ready."""


class ConsumerProcess:
    """One consumer process and its captured output."""

    def __init__(self, popen: ProcessHandle, log_dir: Path, label: str) -> None:
        self.popen = popen
        self.label = label
        self.stdout_path = log_dir / f"{label}.out"
        self.stderr_path = log_dir / f"{label}.err"

    @property
    def pid(self) -> int:
        """The process id (what the journal records as ``pid``)."""
        return self.popen.pid

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        """Exit code once exited (negative: killed by that signal)."""
        return self.popen.poll()

    def wait_ready(self, timeout: float) -> None:
        """Wait until the process prints the worker's ready line."""
        deadline = time.monotonic() + timeout
        while READY_LINE not in self.stdout_path.read_text(errors="replace"):
            if not self.alive():
                raise ConsumerStartError(
                    f"consumer {self.label} exited with code {self.returncode} before it "
                    f"was ready:\n{self.output_tail()}"
                )
            if time.monotonic() > deadline:
                raise ConsumerStartError(
                    f"consumer {self.label} was not ready after {timeout:.0f}s:\n"
                    f"{self.output_tail()}"
                )
            time.sleep(0.02)

    def terminate(self) -> None:
        """Ask for a graceful stop (SIGTERM); returns at once."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """Kill the process with SIGKILL, as a crashing replica dies, and reap it."""
        if self.alive():
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait()

    def suspend(self) -> None:
        """Freeze the process (SIGSTOP): alive, but doing nothing at all.

        Returns once every thread of it has stopped (where ``/proc`` tells):
        the kernel stops the threads one by one, and on a busy machine one of
        them can go on running for tens of milliseconds after the signal.
        """
        self.popen.send_signal(signal.SIGSTOP)
        deadline = time.monotonic() + 5.0
        while not self._all_threads_stopped() and time.monotonic() < deadline:
            time.sleep(0.001)

    def _all_threads_stopped(self) -> bool:
        threads = Path(f"/proc/{self.pid}/task")
        if not threads.is_dir():
            return True  # no /proc here: the signal is all there is
        for stat in threads.glob("*/stat"):
            try:
                state = stat.read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue  # the thread ended meanwhile
            if state not in ("T", "t"):
                return False
        return True

    def resume(self) -> None:
        """Let a suspended process go on (SIGCONT)."""
        self.popen.send_signal(signal.SIGCONT)

    def wait_exit(self, timeout: float) -> int:
        """Wait for the process to exit; return its exit code.

        Raises :class:`subprocess.TimeoutExpired` if it is still running.
        """
        return self.popen.wait(timeout)

    def output_tail(self, lines: int = 40) -> str:
        """The last lines of the process's stdout and stderr."""
        parts = []
        for path in (self.stdout_path, self.stderr_path):
            text = path.read_text(errors="replace") if path.exists() else ""
            tail = "\n".join(text.splitlines()[-lines:])
            parts.append(f"--- {path.name} ---\n{tail}")
        return "\n".join(parts)


class ConsumerPool:
    """Starts consumer processes for one test and reaps them all at its end."""

    def __init__(
        self,
        journal: Journal,
        default_config: TaskProcessorConfig,
        log_dir: Path,
        startup_timeout: float,
    ) -> None:
        self.journal = journal
        self.default_config = default_config
        self.log_dir = log_dir
        self.startup_timeout = startup_timeout
        self.started: list[ConsumerProcess] = []
        log_dir.mkdir(parents=True, exist_ok=True)

    def start(
        self,
        config: TaskProcessorConfig | None = None,
        *,
        concurrency: int = 2,
        graceful_timeout_s: float = DEFAULT_GRACEFUL_TIMEOUT_S,
        wait: bool = True,
        handlers: str = HANDLERS_SPEC,
    ) -> ConsumerProcess:
        """Start ``python -m taskserve.worker`` on ``config`` (default: the test's)
        with ``handlers`` (default: the suite's).

        With ``wait`` (the default) return once the consumer is consuming.
        """
        argv = [
            "--config",
            config_to_json(config or self.default_config),
            "--handlers",
            handlers,
            "--concurrency",
            str(concurrency),
            "--graceful-timeout",
            str(graceful_timeout_s),
        ]
        return self._spawn("taskserve.worker", argv, wait)

    def start_shared(
        self,
        configs: Sequence[TaskProcessorConfig],
        *,
        concurrency: int = 2,
        wait: bool = True,
    ) -> ConsumerProcess:
        """Start one process consuming every config in ``configs`` at once
        (see :mod:`taskserve_conformance.shared_consumer`)."""
        argv: list[str] = []
        for config in configs:
            argv += ["--config", config_to_json(config)]
        argv += ["--handlers", HANDLERS_SPEC, "--concurrency", str(concurrency)]
        return self._spawn("taskserve_conformance.shared_consumer", argv, wait)

    def _spawn(self, module: str, argv: list[str], wait: bool) -> ConsumerProcess:
        """Start ``python -m module *argv`` (see :func:`launcher.launch`)."""
        label = f"consumer-{len(self.started) + 1}"
        env = {**os.environ, **self.journal.env, "PYTHONUNBUFFERED": "1"}
        popen = launch(
            module,
            argv,
            env,
            stdout=self.log_dir / f"{label}.out",
            stderr=self.log_dir / f"{label}.err",
        )
        consumer = ConsumerProcess(popen, self.log_dir, label)
        self.started.append(consumer)
        if wait:
            consumer.wait_ready(self.startup_timeout)
        return consumer

    def alive(self) -> list[ConsumerProcess]:
        """The consumers still running."""
        return [c for c in self.started if c.alive()]

    def reap(self) -> None:
        """Kill every consumer still running and wait for all of them."""
        for consumer in self.started:
            consumer.kill()

    def output_tails(self) -> str:
        """The output tails of every consumer started, for failure reports."""
        return "\n".join(
            f"=== {c.label} (pid {c.pid}, exit {c.returncode}) ===\n{c.output_tail()}"
            for c in self.started
        )
