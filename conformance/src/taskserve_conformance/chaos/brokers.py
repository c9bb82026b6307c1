"""Private, restartable brokers for chaos runs.

Each one is a server process of its own, on free ports and in a directory of
the run, so restarting it disturbs no other user of the machine's brokers:

* :class:`PrivateRedis`: persistent (AOF, ``appendfsync always``), so a
  write acknowledged before the restart survives it;
* :class:`PrivateRabbitMQ`: a RabbitMQ node of its own, restarted with
  ``rabbitmqctl stop_app`` / ``start_app``;
* :class:`PrivatePostgres`: a PostgreSQL cluster of its own (``initdb`` and
  ``pg_ctl``), restarted with ``pg_ctl restart -m fast``.

They need the servers' programs installed (the project's test entry point
installs them); each is also a context manager that stops and removes it.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from abc import ABC, abstractmethod
from pathlib import Path
from types import TracebackType

from taskserve_conformance.ports import free_port

START_TIMEOUT_S = 60.0


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _wait_for_port(port: int, open_: bool, what: str, timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while _port_open(port) != open_:
        if time.monotonic() > deadline:
            state = "open" if open_ else "close"
            raise RuntimeError(f"{what} did not {state} port {port} within {timeout:.0f}s")
        time.sleep(0.05)


def _program(name: str, *patterns: str) -> str:
    found = shutil.which(name) or next(
        (path for pattern in patterns for path in sorted(glob.glob(pattern))), None
    )
    if found is None:
        raise RuntimeError(f"'{name}' is not installed (the test entry point installs it)")
    return found


class PrivateBroker(ABC):
    """A broker process owned by one chaos run, keeping its data in ``directory``."""

    url: str

    @abstractmethod
    def __init__(self, directory: Path) -> None:
        """Choose ports and names; start nothing yet."""

    @abstractmethod
    def start(self) -> None:
        """Start the server and wait until it accepts connections."""

    @abstractmethod
    def restart(self) -> None:
        """Stop the server and start it again on the same data and port."""

    @abstractmethod
    def stop(self) -> None:
        """Stop the server (its data directory stays until the run's removes it)."""

    def __enter__(self) -> PrivateBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class PrivateRedis(PrivateBroker):
    """A persistent Redis of its own: AOF with ``appendfsync always``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._process = subprocess.Popen(
            [
                _program("redis-server"),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--dir",
                str(self.directory),
                "--logfile",
                str(self.directory / "redis.log"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for_port(self.port, True, "Redis")

    def _shutdown(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        import redis

        client = redis.Redis(port=self.port, socket_timeout=10)
        try:
            client.shutdown()  # flushes the AOF
        except (redis.ConnectionError, redis.ResponseError):
            pass
        finally:
            client.close()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self) -> None:
        self._shutdown()
        self.start()

    def stop(self) -> None:
        self._shutdown()


def _shared_directory(prefix: str) -> Path:
    """A fresh directory the server's own user can reach: servers that drop
    to a user of their own (RabbitMQ, PostgreSQL) cannot enter a test's
    private temporary directory."""
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    directory.chmod(0o777)
    return directory


class PrivateRabbitMQ(PrivateBroker):
    """A RabbitMQ node of its own (user guest/guest on loopback); its data lives
    in a directory of its own, removed when it stops."""

    def __init__(self, directory: Path) -> None:
        self.directory = _shared_directory("taskserve-rabbitmq-")
        self.port = free_port()
        self.node = f"tschaos{uuid.uuid4().hex[:8]}@localhost"
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"
        self._started = False

    @property
    def _env(self) -> dict[str, str]:
        d = self.directory
        return {
            **os.environ,
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_PID_FILE": str(d / "node.pid"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq"),
        }

    def _ctl(self, *command: str, attempts: int = 1) -> None:
        """Run ``rabbitmqctl`` on the node; with ``attempts``, again after a
        failure (on a loaded machine the CLI can fail to reach a node that is
        still starting), raising the last failure with its output."""
        for attempt in range(1, attempts + 1):
            try:
                subprocess.run(
                    [
                        _program("rabbitmqctl", "/usr/lib/rabbitmq/bin/rabbitmqctl"),
                        "-n",
                        self.node,
                        *command,
                    ],
                    env=self._env,
                    check=True,
                    capture_output=True,
                    timeout=120,
                )
                return
            except subprocess.CalledProcessError as e:
                if attempt == attempts:
                    output = (e.stderr or b"").decode(errors="replace").strip()
                    raise subprocess.SubprocessError(
                        f"rabbitmqctl {' '.join(command)} failed {attempts} times: {output}"
                    ) from e
                time.sleep(1.0)

    def start(self) -> None:
        (self.directory / "enabled_plugins").write_text("[].\n")
        (self.directory / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = {self.port}\nloopback_users.guest = true\n"
        )
        for name in ("enabled_plugins", "rabbitmq.conf"):
            (self.directory / name).chmod(0o644)
        subprocess.run(
            [_program("rabbitmq-server", "/usr/lib/rabbitmq/bin/rabbitmq-server"), "-detached"],
            env=self._env,
            check=True,
            capture_output=True,
            timeout=60,
        )
        self._started = True
        _wait_for_port(self.port, True, "RabbitMQ")

    def restart(self) -> None:
        self._ctl("stop_app", attempts=5)
        _wait_for_port(self.port, False, "RabbitMQ")
        self._ctl("start_app", attempts=5)
        _wait_for_port(self.port, True, "RabbitMQ")

    def stop(self) -> None:
        if self._started:
            self._started = False
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                self._ctl("stop")
        shutil.rmtree(self.directory, ignore_errors=True)


class PrivatePostgres(PrivateBroker):
    """A PostgreSQL cluster of its own (trust authentication on loopback); its
    data lives in a directory of its own, removed when it stops."""

    def __init__(self, directory: Path) -> None:
        self.directory = _shared_directory("taskserve-postgres-")
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._started = False

    def _run(self, program: str, *arguments: str) -> None:
        binary = _program(program, f"/usr/lib/postgresql/*/bin/{program}")
        command = [binary, *arguments]
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        data = self.directory / "data"
        if not data.exists():
            self._run("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self._run(
            "pg_ctl",
            "-D",
            str(data),
            "-l",
            str(self.directory / "postgres.log"),
            "-o",
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1",
            "-w",
            "start",
        )
        self._started = True
        _wait_for_port(self.port, True, "PostgreSQL")

    def restart(self) -> None:
        self._run("pg_ctl", "-D", str(self.directory / "data"), "-m", "fast", "-w", "stop")
        self.start()

    def stop(self) -> None:
        if self._started:
            self._started = False
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                self._run("pg_ctl", "-D", str(self.directory / "data"), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.directory, ignore_errors=True)
