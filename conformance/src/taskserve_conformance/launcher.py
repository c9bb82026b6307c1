"""Starting consumer processes from an interpreter that has imported them already.

A consumer process is ``python -m taskserve.worker`` (or another module with a
``main(argv)``). Started as a fresh interpreter, each one spends most of its
start-up importing taskserve, its adapter and the engine's library; a suite
that starts hundreds of them spends most of its CPU there. So consumers are
forked from a server process (:mod:`multiprocessing`'s ``forkserver``) that
imported those modules once, before any thread existed. Each child is a real,
separate process: it runs the module's ``main`` with its own arguments,
environment and output files, and SIGTERM, SIGKILL, SIGSTOP reach it alone.

Set ``TASKSERVE_CONFORMANCE_FRESH_INTERPRETERS=1`` to start every consumer as
a new interpreter instead (for an adapter whose modules cannot be imported
before a fork).
"""

from __future__ import annotations

import importlib
import io
import multiprocessing
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

FRESH_INTERPRETERS_ENV = "TASKSERVE_CONFORMANCE_FRESH_INTERPRETERS"
"""Set to 1 to start consumers as fresh interpreters (no fork server)."""

_PRELOAD = "taskserve_conformance.forkserver_preload"


class ProcessHandle(Protocol):
    """What the suite needs of a started process (as :class:`subprocess.Popen` has it)."""

    @property
    def pid(self) -> int: ...

    def poll(self) -> int | None: ...

    def send_signal(self, sig: int) -> None: ...

    def wait(self, timeout: float | None = None) -> int: ...


class ForkedProcess:
    """A process forked by the fork server, with :class:`subprocess.Popen`'s calls.

    Once the process has ended, its exit code is kept and the process object
    closed, so that its pipe to the fork server does not outlive it (a long
    test run starts thousands of consumers).
    """

    def __init__(self, process: multiprocessing.process.BaseProcess) -> None:
        self._process: multiprocessing.process.BaseProcess | None = process
        pid = process.pid
        assert pid is not None, "the process was started"
        self._pid = pid
        self._exitcode: int | None = None

    @property
    def pid(self) -> int:
        return self._pid

    def _ended(self) -> int | None:
        process = self._process
        if process is not None and process.exitcode is not None:
            self._exitcode = process.exitcode
            process.close()
            self._process = None
        return self._exitcode

    def poll(self) -> int | None:
        return self._ended()

    def send_signal(self, sig: int) -> None:
        if self._ended() is None:
            os.kill(self.pid, sig)

    def wait(self, timeout: float | None = None) -> int:
        if self._process is not None:
            self._process.join(timeout)
        code = self._ended()
        if code is None:
            raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0.0)
        return code


def launch(
    module: str,
    argv: Sequence[str],
    env: Mapping[str, str],
    stdout: Path,
    stderr: Path,
) -> ProcessHandle:
    """Start ``python -m module *argv`` with ``env``, its output going to the
    two files; returns at once."""
    if os.environ.get(FRESH_INTERPRETERS_ENV) == "1":
        with open(stdout, "wb") as out, open(stderr, "wb") as err:
            return subprocess.Popen(
                [sys.executable, "-m", module, *argv],
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                env=dict(env),
            )
    for path in (stdout, stderr):
        path.write_bytes(b"")  # there at once, as for a fresh interpreter's output
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([_PRELOAD])
    process = context.Process(
        target=_run_main,
        args=(module, list(argv), dict(env), str(stdout), str(stderr)),
        name=f"taskserve-consumer {module}",
        daemon=True,
    )
    process.start()
    return ForkedProcess(process)


def _run_main(module: str, argv: list[str], env: dict[str, str], stdout: str, stderr: str) -> None:
    """In the child: take the given environment and output files, run ``main``."""
    os.environ.clear()
    os.environ.update(env)
    for fd, path in ((1, stdout), (2, stderr)):
        target = os.open(path, os.O_WRONLY | os.O_APPEND)
        os.dup2(target, fd)
        os.close(target)
    # Unbuffered, as with PYTHONUNBUFFERED: a line is in the file once written.
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "wb", closefd=False), write_through=True)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "wb", closefd=False), write_through=True)
    # As in a fresh interpreter: SIGINT raises KeyboardInterrupt, SIGTERM ends.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    importlib.import_module(module).main(argv)
