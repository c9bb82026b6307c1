"""How a taskserve task travels as an RQ job.

Every task of a queue is an RQ job of one generic function, :func:`run_task`,
whose only argument is the task's wire message (a JSON object: id, name,
args, kwargs, ...). The job id is the task id. RQ stores the call with its
``JSONSerializer``, never pickle. Because the task name is inside the message
and not RQ's function path, a task with an unknown name still reaches the
taskserve runner, which dead-letters it as unprocessable with its payload.
"""

from __future__ import annotations

import json
import logging
import re
import zlib
from typing import Any

from rq.job import Job
from rq.serializers import JSONSerializer

from taskserve.kit import PayloadError, TaskMessage

RUN_TASK = "taskserve_rq.wire.run_task"
"""RQ function path of every taskserve job."""

_FORMER_RUN_TASK = "taskserve_rq.job.run_task"
"""The function path of jobs enqueued by taskserve-rq 0.1, still read."""

SERIALIZER = JSONSerializer
"""RQ serializer of job data and metadata."""

JOB_ID = re.compile(r"[A-Za-z0-9_-]+")
"""Job ids RQ accepts."""

logger = logging.getLogger(__name__)


def valid_job_id(task_id: str) -> bool:
    """Whether RQ accepts ``task_id`` as a job id (letters, digits, ``_``, ``-``)."""
    return JOB_ID.fullmatch(task_id) is not None


class TaskJob(Job):
    """RQ's job, tolerant of a hash it cannot parse.

    RQ raises while fetching such a job, which stops the worker that fetched
    it, again on every redelivery. This class keeps whatever ``data`` bytes the
    hash has (none: empty bytes) so the job reaches the runner, which
    dead-letters it as undecodable.
    """

    def restore(self, raw_data: dict[bytes, bytes]) -> Any:
        """Load the hash as RQ does, or only its data bytes if RQ cannot."""
        try:
            return super().restore(raw_data)
        except Exception as e:
            logger.warning("taskserve: RQ cannot parse job %s (%s); keeping its bytes", self.id, e)
            data = raw_data.get(b"data", b"")
            try:
                self.data = zlib.decompress(data)
            except zlib.error:
                self.data = data
            return None


def run_task(message: dict[str, Any]) -> None:
    """The function every taskserve job names; taskserve's consumer runs the task.

    A plain ``rq worker`` must not consume a taskserve queue: calling this
    outside taskserve's consumer raises, and RQ marks the job failed.
    """
    raise RuntimeError(
        f"task {message.get('id')!r} belongs to a taskserve queue: run it with taskserve's "
        "consumer (a @task_consumer deployment or `python -m taskserve.worker`), "
        "not with `rq worker`"
    )


def job_arguments(message: TaskMessage) -> tuple[dict[str, Any]]:
    """The RQ call arguments carrying ``message``."""
    data: dict[str, Any] = json.loads(message.to_json())
    return (data,)


def decode_job_data(data: bytes) -> TaskMessage | bytes:
    """The task message in RQ job ``data``, or ``data`` itself when it is not one.

    Bytes returned are handed to the runner as they are: it decodes a bare
    taskserve message, and dead-letters anything else as undecodable with
    these exact bytes.
    """
    try:
        call = SERIALIZER.loads(data)  # type: ignore[no-untyped-call]
    except (ValueError, UnicodeDecodeError):
        return data
    if (
        isinstance(call, list)
        and len(call) == 4
        and call[0] in (RUN_TASK, _FORMER_RUN_TASK)
        and isinstance(call[2], list)
        and len(call[2]) == 1
        and isinstance(call[2][0], dict)
        and not call[3]
    ):
        try:
            return TaskMessage.from_dict(call[2][0])
        except PayloadError:
            return data
    return data
