"""Reading deliveries: taskserve messages, raw Celery messages, bare JSON, garbage."""

from __future__ import annotations

import json

from taskserve.serialization import TaskMessage, build_message
from taskserve_celery.wire import EXECUTE_TASK, read_delivery, send_task_arguments


def _message() -> TaskMessage:
    return build_message(
        task_name="index_document",
        args=["doc-1", {"nested": [1, 2.5, None]}],
        kwargs={"url": "https://example.org/a.pdf"},
        queue_name="q",
        max_payload_bytes=10_000,
    )


def _celery_body(args: object, kwargs: object) -> bytes:
    return json.dumps([args, kwargs, {"callbacks": None}]).encode()


def test_published_message_reads_back_exactly() -> None:
    message = _message()
    sent = send_task_arguments(message)
    assert sent["name"] == EXECUTE_TASK and sent["serializer"] == "json"
    body = _celery_body(sent["args"], sent["kwargs"])
    headers = {"task": EXECUTE_TASK, "id": message.id}
    assert read_delivery(body, headers, "application/json", "q") == message


def test_plain_celery_task_message_becomes_a_task_of_that_name() -> None:
    body = _celery_body(["doc-7"], {"lang": "en"})
    headers = {"task": "index_document", "id": "celery-id"}
    read = read_delivery(body, headers, "application/json", "q")
    assert isinstance(read, TaskMessage)
    assert (read.id, read.name, read.args, read.kwargs) == (
        "celery-id",
        "index_document",
        ["doc-7"],
        {"lang": "en"},
    )


def test_bare_task_message_json_is_read() -> None:
    message = _message()
    assert read_delivery(message.to_bytes(), None, "application/json", "q") == message


def test_undecodable_bodies_stay_raw_bytes() -> None:
    garbage = b"\xff\xfe not json"
    assert read_delivery(garbage, None, "application/octet-stream", "q") == garbage
    assert read_delivery(garbage, {"task": EXECUTE_TASK}, "application/json", "q") == garbage
    pickled = b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00]\x94."
    assert (
        read_delivery(pickled, {"task": "t", "id": "i"}, "application/x-python-serialize", "q")
        == pickled
    )
    wrong_shape = _celery_body([{"not": "a task message"}], {})
    assert (
        read_delivery(wrong_shape, {"task": EXECUTE_TASK}, "application/json", "q") == wrong_shape
    )
