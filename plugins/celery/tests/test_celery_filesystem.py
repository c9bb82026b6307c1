"""The filesystem broker's messages appear whole: a consumer polling the folder
while a producer writes never takes a message file before it is written. And
they are named in priority order: a consumer takes the highest priority first,
and a message handed back, restored or retried keeps its priority."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection, Exchange, Queue
from kombu.transport import filesystem as kombu_filesystem

from taskserve import TaskProcessorConfig, TaskState
from taskserve_celery import CeleryAdapter, CeleryAdapterConfig
from taskserve_celery.filesystem import TRANSPORT, Transport, message_name
from taskserve_conformance import wait_for_status, wait_until

MESSAGES = 400
WAIT_S = 30.0


def _race(folder: Path, transport: Any) -> tuple[int, int]:
    """Publish MESSAGES messages while a second connection takes files as fast as
    it can; return (messages read whole, files read empty)."""
    options = {"data_folder_in": str(folder), "data_folder_out": str(folder)}
    read = empty = 0
    done = threading.Event()

    def consume() -> None:
        nonlocal read, empty
        with Connection("filesystem://", transport=transport, transport_options=options) as c:
            channel = c.default_channel
            while not (done.is_set() and read + empty >= MESSAGES):
                try:
                    channel._get("q")
                    read += 1
                except ValueError:  # kombu's json of an empty file
                    empty += 1
                except Exception:  # queue.Empty: nothing there yet
                    if done.is_set() and not any(folder.glob("*.q.msg")):
                        return

    reader = threading.Thread(target=consume)
    reader.start()
    with Connection("filesystem://", transport=transport, transport_options=options) as c:
        channel = c.default_channel
        for number in range(MESSAGES):
            channel._put("q", {"body": "x" * 20_000, "number": number})
    done.set()
    reader.join(30)
    assert not reader.is_alive()
    return read, empty


def test_a_polling_consumer_reads_every_message_whole(tmp_path: Path) -> None:
    read, empty = _race(tmp_path, TRANSPORT)
    assert (read, empty) == (MESSAGES, 0)
    assert not list(tmp_path.iterdir())  # no partial file left behind


def test_the_race_is_real_on_kombus_own_transport(tmp_path: Path) -> None:
    """Without the rename, the same race loses messages (read empty), which is
    why the adapter does not use kombu's transport as it is."""
    for attempt in range(30):  # the race shows in about half the attempts
        folder = tmp_path / str(attempt)
        folder.mkdir()
        _, empty = _race(folder, kombu_filesystem.Transport)
        if empty:
            return
    pytest.fail("kombu's filesystem transport never exposed a message file before it was written")


def test_the_transport_is_kombus_but_for_writing() -> None:
    assert issubclass(Transport, kombu_filesystem.Transport)
    assert Transport.Channel._get is kombu_filesystem.Channel._get


# -- priorities: message names sort highest priority first ------------------------------
@pytest.fixture(scope="module")
def control(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The exchange tables of this module's connections (kombu's default is
    ./control). One folder for all: kombu remembers declared exchanges per
    process, and a fresh folder would miss a table it does not write again."""
    return tmp_path_factory.mktemp("control")


def _connection(folder: Path, control: Path, transport: Any = TRANSPORT) -> Any:
    options = {
        "data_folder_in": str(folder),
        "data_folder_out": str(folder),
        "control_folder": str(control),
    }
    return Connection("filesystem://", transport=transport, transport_options=options)


def _queue(name: str = "q") -> Queue:
    return Queue(name, Exchange(name, type="direct"), routing_key=name)


def _publish(connection: Any, body: str, priority: int | None, queue: str = "q") -> None:
    declared = _queue(queue)
    connection.Producer().publish(
        body, exchange=declared.exchange, routing_key=queue, declare=[declared], priority=priority
    )


def _take(connection: Any, queue: str = "q") -> Any:
    message = _queue(queue)(connection.default_channel).get(no_ack=False)
    assert message is not None, "no message was waiting"
    return message


def test_names_sort_by_priority_highest_first_then_by_time() -> None:
    names = [
        message_name("q", priority, clock)
        for clock, priority in enumerate([0, 9, 5, 9, 0, 5], start=999)
    ]
    assert all(name.partition(".")[2] == "q.msg" for name in names)  # kombu's queue match
    taken = sorted(names)
    assert [n[:2] for n in taken] == ["+0", "+0", "+4", "+4", "+9", "+9"]
    for level in range(0, len(taken), 2):  # within a priority, the older first
        first, second = taken[level], taken[level + 1]
        assert names.index(first) < names.index(second)
    # 10**9 ns after 999 ns: zero-padding keeps the time order past a digit more
    assert message_name("q", 3, 999) < message_name("q", 3, 10**9)


def test_a_consumer_takes_the_highest_priority_first(tmp_path: Path, control: Path) -> None:
    with _connection(tmp_path, control) as connection:
        for body, priority in [("p0", 0), ("none", None), ("p5", 5), ("p9", 9), ("p5b", 5)]:
            _publish(connection, body, priority)
        _publish(connection, "other queue", 9, queue="other")
        taken = []
        for _ in range(5):
            message = _take(connection)
            taken.append(message.payload)
            message.ack()
    assert taken == ["p9", "p5", "p5b", "p0", "none"]


def test_a_message_handed_back_or_restored_keeps_its_priority(
    tmp_path: Path, control: Path
) -> None:
    with _connection(tmp_path, control) as connection:
        _publish(connection, "low", 1)
        _publish(connection, "urgent", 8)
        message = _take(connection)
        assert message.payload == "urgent"
        message.reject(requeue=True)  # a hand-back
        again = _take(connection)
        assert again.payload == "urgent", "a handed-back message lost its priority"
    # the connection closed holding it unacknowledged: kombu restores it
    assert sorted(p.name[:2] for p in tmp_path.glob("*.q.msg")) == ["+1", "+8"]
    with _connection(tmp_path, control) as connection:
        assert _take(connection).payload == "urgent"


def test_messages_kombus_own_transport_wrote_come_after_every_level(
    tmp_path: Path, control: Path
) -> None:
    with _connection(tmp_path, control, kombu_filesystem.Transport) as connection:
        _publish(connection, "kombu's", 9)
    with _connection(tmp_path, control) as connection:
        _publish(connection, "lowest", 0)
        assert [_take(connection).payload for _ in range(2)] == ["lowest", "kombu's"]


def test_a_retry_keeps_its_priority(tmp_path: Path) -> None:
    """The retry of a priority 9 task is published again at priority 9 (its file
    is named so) while lower tasks wait, and starts before them."""
    folder = tmp_path / "queue"
    queue_name = f"fs_retry_{uuid.uuid4().hex[:8]}"
    config = TaskProcessorConfig(
        queue_name=queue_name,
        adapter_config=CeleryAdapterConfig(
            broker_url="filesystem://",
            backend_url=f"file://{tmp_path / 'state'}",
            broker_transport_options={
                "data_folder_in": str(folder),
                "data_folder_out": str(folder),
                "control_folder": str(tmp_path / "control"),
            },
        ),
        max_retries=1,
        retry_backoff_s=0.05,
        retry_jitter=False,
        lease_s=2,
    )
    started: list[str] = []
    gate = threading.Event()

    def flaky() -> str:
        started.append("flaky")
        if started.count("flaky") == 1:
            raise RuntimeError("first attempt fails")
        return "retried"

    def hold(number: int) -> int:
        started.append(f"hold{number}")
        assert gate.wait(WAIT_S)
        return number

    producer, consumer = CeleryAdapter(config), CeleryAdapter(config)
    try:
        consumer.initialize(consumer_concurrency=1)
        consumer.register_task_handle(flaky, "flaky")
        consumer.register_task_handle(hold, "hold")
        urgent = producer.enqueue_task_sync("flaky", priority=9)
        low = [producer.enqueue_task_sync("hold", args=[n]) for n in range(3)]
        consumer.start_consumer()
        wait_until(lambda: "hold0" in started, WAIT_S, "the first low task did not start")
        wait_until(
            lambda: any(folder.glob(f"+0*.{queue_name}.msg")),
            WAIT_S,
            "the retry was not published at priority 9",
            describe=lambda: sorted(p.name for p in folder.iterdir()),
        )
        gate.set()
        for task in (urgent, *low):
            wait_for_status(producer, task.id, TaskState.SUCCESS, WAIT_S)
        assert started == ["flaky", "hold0", "flaky", "hold1", "hold2"]
    finally:
        gate.set()
        consumer.shutdown()
        producer.shutdown()
