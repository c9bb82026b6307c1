"""The journal: what the suite's handlers did, written outside the adapter.

Each handler run appends one JSON line per event (``start``, ``end``,
``raise``, ``interrupted``, ``saw_cancel``, and the progress handlers'
``reported``, ``burst_start``, ``burst_end``, ``late_report``) to a file of
the directory named by the environment variable :data:`JOURNAL_ENV`, one file
per process. Tests
read the journal to count runs and duplicates without asking the adapter
under test. The same directory holds *gates*: files whose existence releases
handlers that wait for them, so tests decide when a running task may end.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

JOURNAL_ENV = "TASKSERVE_CONFORMANCE_JOURNAL"
"""Environment variable naming the journal directory of a consumer process."""

_FILE_PREFIX = "journal-"
_GATE_PREFIX = "gate-"


def journal_dir() -> Path:
    """The journal directory of this process, from :data:`JOURNAL_ENV`."""
    directory = os.environ.get(JOURNAL_ENV)
    if not directory:
        raise RuntimeError(
            f"{JOURNAL_ENV} is not set: conformance handlers run only in consumer "
            "processes started by the conformance suite"
        )
    return Path(directory)


def write_event(event: str, **fields: Any) -> None:
    """Append one event line to this process's journal file.

    One ``write`` of an ``O_APPEND`` file: the line is in the file as soon as
    this returns, even if the process is killed right after.
    """
    entry = {"event": event, "pid": os.getpid(), "time": time.time(), **fields}
    line = json.dumps(entry, default=repr, separators=(",", ":")) + "\n"
    path = journal_dir() / f"{_FILE_PREFIX}{os.getpid()}.jsonl"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def gate_is_open(name: str) -> bool:
    """Whether the gate ``name`` has been opened (in a consumer process)."""
    return (journal_dir() / f"{_GATE_PREFIX}{name}").exists()


@dataclass(frozen=True)
class JournalEntry:
    """One recorded event of a handler run."""

    event: str
    task_id: str
    name: str
    attempt: int
    pid: int
    time: float
    args: list[Any]
    kwargs: dict[str, Any]
    detail: Any = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JournalEntry:
        """Build an entry from one decoded journal line."""
        return cls(
            event=data["event"],
            task_id=data["task_id"],
            name=data["name"],
            attempt=data["attempt"],
            pid=data["pid"],
            time=data["time"],
            args=data.get("args", []),
            kwargs=data.get("kwargs", {}),
            detail=data.get("detail"),
        )


class Journal:
    """The test-side view of a journal directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def env(self) -> dict[str, str]:
        """Environment entries that make consumer processes write here."""
        return {JOURNAL_ENV: str(self.directory)}

    def entries(self) -> list[JournalEntry]:
        """Every event recorded so far, oldest first."""
        found: list[JournalEntry] = []
        for path in self.directory.glob(f"{_FILE_PREFIX}*.jsonl"):
            found.extend(self._read(path))
        return sorted(found, key=lambda e: e.time)

    @staticmethod
    def _read(path: Path) -> Iterator[JournalEntry]:
        for line in path.read_text().splitlines():
            try:
                data = json.loads(line)
            except ValueError:  # a line cut short by a killed process
                continue
            yield JournalEntry.from_dict(data)

    def events(self, task_id: str | None = None, event: str | None = None) -> list[JournalEntry]:
        """Entries of one task and/or one event kind."""
        return [
            e
            for e in self.entries()
            if (task_id is None or e.task_id == task_id) and (event is None or e.event == event)
        ]

    def runs(self, task_id: str) -> list[JournalEntry]:
        """The ``start`` events of a task: one per handler run."""
        return self.events(task_id, "start")

    def run_counts(self, event: str = "start") -> Counter[str]:
        """How many ``event`` entries each task id has."""
        return Counter(e.task_id for e in self.entries() if e.event == event)

    def open_gate(self, name: str) -> None:
        """Release every handler waiting for gate ``name``."""
        (self.directory / f"{_GATE_PREFIX}{name}").touch()
