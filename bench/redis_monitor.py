"""Every command a private Redis runs, recorded with ``MONITOR``, and round trips counted from them.

A :class:`CommandRecorder` reads the server's ``MONITOR`` stream in a thread.
:meth:`CommandRecorder.mark` sends a marker (``ECHO``) and returns once the
recorder has seen it: the commands between two marks are exactly those the
server ran in between, in its order. ``MONITOR`` tells a client's commands
from those a Lua script ran; :func:`round_trips` counts the clients' commands,
a ``MULTI`` ... ``EXEC`` block of one connection as one (a pipeline without a
transaction cannot be told apart and counts one per command).
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from bench.redis_counts import private_client

MARK_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Command:
    """One command as ``MONITOR`` showed it: ``client`` is ``lua`` inside a script."""

    client: str
    name: str


@dataclass(frozen=True)
class Counts:
    """Round trips of one phase, by command, and the commands scripts ran."""

    round_trips: int
    by_command: dict[str, int]
    in_scripts: int


def round_trips(commands: Sequence[Command]) -> Counts:
    """Count the round trips of ``commands`` (see the module's docstring)."""
    open_blocks: set[str] = set()
    by_command: Counter[str] = Counter()
    trips = inside = 0
    for command in commands:
        if command.client == "lua":
            inside += 1
            continue
        if command.client in open_blocks:
            if command.name in ("exec", "discard"):
                open_blocks.discard(command.client)
            continue
        if command.name == "multi":
            open_blocks.add(command.client)
        trips += 1
        by_command[command.name] += 1
    return Counts(trips, dict(sorted(by_command.items())), inside)


class CommandRecorder:
    """Records the commands of this process's private Redis while open."""

    def __init__(self) -> None:
        self._client: Any = private_client()
        self._token = f"bench-mark-{uuid.uuid4().hex}"
        self.commands: list[Command] = []
        self._marks: dict[str, threading.Event] = {}
        self._positions: dict[str, int] = {}
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._read, name="bench-monitor", daemon=True)
        self._monitor: Any = None

    def _read(self) -> None:
        try:
            for event in self._monitor.listen():
                if event["client_type"] == "lua":
                    client = "lua"
                else:
                    client = f"{event['client_address']}:{event['client_port']}"
                text: str = event["command"]
                if self._token in text:
                    label = text.split()[-1]
                    self._positions[label] = len(self.commands)
                    self._marks[label].set()
                    if label.endswith("-stop"):
                        return
                    continue
                self.commands.append(Command(client, text.split(" ", 1)[0].lower()))
        except BaseException as e:
            self._error = e
            for event in self._marks.values():
                event.set()

    def mark(self, suffix: str = "") -> int:
        """The number of commands recorded up to now (every command before this call)."""
        label = f"{self._token}-{len(self._marks)}{suffix}"
        seen = self._marks[label] = threading.Event()
        self._client.echo(label)
        if not seen.wait(MARK_TIMEOUT_S) or self._error is not None:
            raise RuntimeError(f"MONITOR stopped: {self._error!r}")
        return self._positions[label]

    def between(self, start: int, end: int) -> Counts:
        """The round trips between two marks."""
        return round_trips(self.commands[start:end])

    def __enter__(self) -> CommandRecorder:
        self._monitor = self._client.monitor().__enter__()
        self._thread.start()
        self.mark()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if self._thread.is_alive():
                self.mark("-stop")
                self._thread.join(10)
        finally:
            self._monitor.__exit__(exc_type, exc, traceback)
            self._client.close()
