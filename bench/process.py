"""Consumer processes: start, wait until consuming, stop or kill."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType

from bench.engines.base import ConsumerCommand
from bench.tasks import MARKERS_ENV

REPOSITORY = Path(__file__).resolve().parent.parent
"""The directory holding the ``bench`` package (put on the consumers' path)."""

START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0


class ConsumerProcess:
    """A consumer process, as a context manager that stops it on exit.

    Its standard output is read until the ready line appears (and drained
    after); its standard error goes to ``log_path``, whose end is shown when
    the process does not start.
    """

    def __init__(self, command: ConsumerCommand, log_path: Path, markers: Path) -> None:
        self.command = command
        self.log_path = log_path
        self.markers = markers
        self._ready = threading.Event()
        self._process: subprocess.Popen[str] | None = None

    @property
    def pid(self) -> int:
        """The process id."""
        assert self._process is not None
        return self._process.pid

    def start(self) -> ConsumerProcess:
        """Start the process and return once it consumes."""
        path = os.environ.get("PYTHONPATH")
        env = {
            **os.environ,
            "PYTHONPATH": str(REPOSITORY) + (os.pathsep + path if path else ""),
            "PYTHONUNBUFFERED": "1",
            MARKERS_ENV: str(self.markers),
            **self.command.env,
        }
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                list(self.command.argv),
                stdout=subprocess.PIPE,
                stderr=log,
                stdin=subprocess.DEVNULL,
                text=True,
                env=env,
                cwd=REPOSITORY,
            )
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._ready.wait(0.05):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(
                    f"consumer {' '.join(self.command.argv[:4])} did not start:\n{self._log_tail()}"
                )
        return self

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            if self.command.ready_line in line:
                self._ready.set()

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL, and reap it."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
        if self._process is not None:
            self._process.wait()

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM (a graceful stop), then SIGKILL after ``timeout_s``."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()

    def __enter__(self) -> ConsumerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
