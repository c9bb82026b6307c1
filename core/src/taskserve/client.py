"""Python clients of the task HTTP API (``taskserve.http``), sync and async.

::

    with TaskClient("http://localhost:8000/tasks") as client:
        task = client.submit("index_document", kwargs={"document_id": "a1"})
        print(task.id, task.status().status)
        print(task.result(timeout=60))      # waits; raises TaskFailed on FAILURE

    async with AsyncTaskClient("http://localhost:8000/tasks") as client:
        task = await client.submit("index_document", kwargs={"document_id": "a1"})
        value = await task.result(timeout=60)

A handle offers ``status()``, ``progress()`` (the handler's last report),
``result(timeout=...)``, ``cancel()`` and ``retry()`` (which returns the new
task's handle). Server errors become the
matching taskserve exceptions: ``TaskNotFound`` (404), ``PayloadError``
(422), ``UnsupportedCapability`` (501), ``BrokerUnavailable`` (503), and
:class:`ClientError` for anything else. Needs ``httpx``
(``pip install 'taskserve[serve]'``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

import httpx

from taskserve.errors import (
    BrokerUnavailable,
    PayloadError,
    TaskCancelled,
    TaskNotFound,
    TaskserveError,
    UnsupportedCapability,
)
from taskserve.models import (
    CancelOutcome,
    DeadLetterKind,
    HealthReport,
    NotRedriven,
    TaskError,
    TaskProgress,
    TaskResult,
)
from taskserve.scheduling import due_time, task_priority
from taskserve.states import TaskState
from taskserve.webhooks.targets import webhook_events as checked_webhook_events
from taskserve.webhooks.targets import webhook_url as checked_webhook_url

DEFAULT_POLL_INTERVAL_S = 0.25
IDEMPOTENCY_HEADER = "Idempotency-Key"


class ClientError(TaskserveError):
    """The server refused a request; ``status_code`` and ``detail`` say why."""

    def __init__(self, status_code: int, detail: str) -> None:
        self.status_code = status_code
        self.detail = detail
        super().__init__(f"HTTP {status_code}: {detail}")


class TaskFailed(TaskserveError):
    """The task ended in FAILURE; ``error`` holds its last error."""

    def __init__(self, task_id: str, error: TaskError | None) -> None:
        self.task_id = task_id
        self.error = error
        what = f"{error.type}: {error.message}" if error else "no error recorded"
        super().__init__(f"task {task_id} failed: {what}")


def _detail(response: httpx.Response) -> tuple[str, dict[str, Any]]:
    try:
        body = response.json()
    except ValueError:
        return response.text or response.reason_phrase, {}
    if isinstance(body, dict):
        return str(body.get("detail", body)), body
    return str(body), {}


def _raise_for(response: httpx.Response, task_id: str | None = None) -> None:
    if response.status_code < 400:
        return
    detail, body = _detail(response)
    code = response.status_code
    if code == 404 and task_id is not None:
        raise TaskNotFound(task_id, f"on the server: {detail}")
    if code in (413, 422):
        raise PayloadError(detail)
    if code == 501:
        raise UnsupportedCapability("server", str(body.get("capability") or detail))
    if code == 503:
        raise BrokerUnavailable(detail)
    raise ClientError(code, detail)


def _task_result(data: Mapping[str, Any]) -> TaskResult:
    return TaskResult.model_validate(dict(data))


def _outcome(data: Mapping[str, Any]) -> Any:
    """The value of a finished task's ``/get`` body, or its exception."""
    state = TaskState(data["status"])
    if state is TaskState.SUCCESS:
        return data.get("result")
    if state is TaskState.CANCELLED:
        raise TaskCancelled(f"task {data['id']} was cancelled")
    error = data.get("error")
    raise TaskFailed(str(data["id"]), TaskError.model_validate(error) if error else None)


def _submit_body(
    task_name: str,
    args: Sequence[Any] | None,
    kwargs: Mapping[str, Any] | None,
    delay_s: float | None = None,
    eta: datetime | None = None,
    priority: int | None = None,
    webhook_url: str | None = None,
    webhook_events: Collection[str] | None = None,
) -> dict[str, Any]:
    due_time(delay_s, eta)  # the same checks as the server's, before any request
    task_priority(priority)
    if webhook_url is not None:  # the server checks the host too, and its secret
        checked_webhook_url(webhook_url)
    if webhook_events is not None:
        checked_webhook_events(webhook_events)

    body: dict[str, Any] = {
        "task_name": task_name,
        "args": list(args or []),
        "kwargs": dict(kwargs or {}),
    }
    if delay_s is not None:
        body["delay_s"] = delay_s
    if eta is not None:
        body["eta"] = eta.isoformat()
    if priority is not None:
        body["priority"] = priority
    if webhook_url is not None:
        body["webhook_url"] = webhook_url
    if webhook_events is not None:
        body["webhook_events"] = [str(event) for event in webhook_events]
    return body


def _headers(idempotency_key: str | None) -> dict[str, str]:
    return {IDEMPOTENCY_HEADER: idempotency_key} if idempotency_key else {}


_H = TypeVar("_H")


class Redriven(list[_H]):
    """The handles of the tasks a redrive enqueued (in the order of their
    records), with ``not_redriven``: the records left in place and why."""

    def __init__(self, handles: Sequence[_H], not_redriven: Sequence[NotRedriven]) -> None:
        super().__init__(handles)
        self.not_redriven = list(not_redriven)


def _redriven(client: Any, handle: Any, body: Any) -> Any:
    return Redriven(
        [handle(client, str(item["task_id"])) for item in body["redriven"]],
        [NotRedriven.model_validate(item) for item in body["not_redriven"]],
    )


def _purge_body(kind: DeadLetterKind | str, ids: Sequence[str] | None) -> dict[str, Any]:
    if ids is None:
        return {"kind": DeadLetterKind(kind).value, "all": True}
    return {"kind": DeadLetterKind(kind).value, "ids": list(ids)}


class TaskHandle:
    """A submitted task, seen from a :class:`TaskClient`."""

    def __init__(self, client: TaskClient, task_id: str) -> None:
        self.client = client
        self.id = task_id

    def status(self) -> TaskResult:
        """The task's current status (no result)."""
        return self.client.status(self.id)

    def progress(self) -> TaskProgress | None:
        """The last progress the task's handler reported (None if it never
        did); read from the status, so at most a write interval old."""
        return self.status().progress

    def result(
        self, timeout: float | None = None, poll_interval: float = DEFAULT_POLL_INTERVAL_S
    ) -> Any:
        """Wait for the task to end and return its result.

        Raises :class:`TaskFailed` on FAILURE, ``TaskCancelled`` on CANCELLED and
        ``TimeoutError`` if it has not ended within ``timeout`` seconds.
        """
        return self.client.result(self.id, timeout=timeout, poll_interval=poll_interval)

    def cancel(self) -> CancelOutcome:
        """Cancel the task."""
        return self.client.cancel(self.id)

    def retry(self) -> TaskHandle:
        """Enqueue the task's payload again; the new task's handle."""
        return self.client.retry(self.id)

    def __repr__(self) -> str:
        return f"<TaskHandle {self.id}>"


class TaskClient:
    """Synchronous client of a task HTTP API rooted at ``base_url``.

    ``http_client`` may be given (an ``httpx.Client``, for instance FastAPI's
    ``TestClient``); its ``base_url`` is then used unless ``base_url`` is set.
    """

    def __init__(
        self,
        base_url: str = "",
        *,
        timeout: float = 30.0,
        headers: Mapping[str, str] | None = None,
        http_client: httpx.Client | None = None,
    ) -> None:
        self._owns = http_client is None
        self._http = http_client or httpx.Client(timeout=timeout, headers=dict(headers or {}))
        self._base = base_url.rstrip("/")

    def _url(self, path: str) -> str:
        return f"{self._base}{path}"

    def submit(
        self,
        task_name: str,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        delay_s: float | None = None,
        eta: datetime | None = None,
        priority: int | None = None,
        webhook_url: str | None = None,
        webhook_events: Collection[str] | None = None,
    ) -> TaskHandle:
        """Enqueue a task and return its handle at once; with ``delay_s`` or
        ``eta`` (an aware datetime) it runs no earlier than that, with
        ``priority`` (0-9) before ready tasks of lower priorities, and with
        ``webhook_url`` the queue POSTs signed events there (``webhook_events``;
        default: succeeded, failed, cancelled)."""
        response = self._http.post(
            self._url("/submit"),
            json=_submit_body(
                task_name, args, kwargs, delay_s, eta, priority, webhook_url, webhook_events
            ),
            headers=_headers(idempotency_key),
        )
        _raise_for(response)
        return TaskHandle(self, str(response.json()["task_id"]))

    def handle(self, task_id: str) -> TaskHandle:
        """A handle for a task submitted earlier."""
        return TaskHandle(self, task_id)

    def status(self, task_id: str) -> TaskResult:
        """A task's status (no result)."""
        response = self._http.get(self._url(f"/status/{task_id}"))
        _raise_for(response, task_id)
        return _task_result(response.json())

    def result(
        self,
        task_id: str,
        timeout: float | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL_S,
    ) -> Any:
        """Wait for a task to end; see :meth:`TaskHandle.result`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            response = self._http.get(self._url(f"/get/{task_id}"))
            if response.status_code != 409 or "status" not in _detail(response)[1]:
                _raise_for(response, task_id)
                return _outcome(response.json())
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"task {task_id} did not end within {timeout}s")
            time.sleep(poll_interval)

    def cancel(self, task_id: str) -> CancelOutcome:
        """Cancel a task."""
        response = self._http.post(self._url(f"/cancel/{task_id}"))
        _raise_for(response, task_id)
        return CancelOutcome.model_validate(response.json())

    def retry(self, task_id: str) -> TaskHandle:
        """Enqueue a task's payload again; the new task's handle."""
        response = self._http.post(self._url(f"/retry/{task_id}"))
        _raise_for(response, task_id)
        return TaskHandle(self, str(response.json()["task_id"]))

    def dead_letters(
        self, kind: DeadLetterKind | str = DeadLetterKind.FAILED, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Dead-letter records (JSON objects; ``raw_base64`` for undecodable bytes)."""
        response = self._http.get(
            self._url("/dead-letters"), params={"kind": DeadLetterKind(kind).value, "limit": limit}
        )
        _raise_for(response)
        records: list[dict[str, Any]] = response.json()
        return records

    def redrive(
        self, ids: Sequence[str] | None = None, kind: DeadLetterKind | str = DeadLetterKind.FAILED
    ) -> Redriven[TaskHandle]:
        """Enqueue dead letters again (all of ``kind`` when ``ids`` is None); the
        new tasks' handles, with ``not_redriven`` listing the records left and why."""
        response = self._http.post(
            self._url("/dead-letters/redrive"),
            json={
                "ids": list(ids) if ids is not None else None,
                "kind": DeadLetterKind(kind).value,
            },
        )
        _raise_for(response)
        redriven: Redriven[TaskHandle] = _redriven(self, TaskHandle, response.json())
        return redriven

    def purge(
        self, kind: DeadLetterKind | str = DeadLetterKind.FAILED, ids: Sequence[str] | None = None
    ) -> int:
        """Delete dead letters (every record of ``kind`` when ``ids`` is None);
        how many were deleted."""
        response = self._http.post(self._url("/dead-letters/purge"), json=_purge_body(kind, ids))
        _raise_for(response)
        return int(response.json()["purged"])

    def health(self) -> HealthReport:
        """The server's broker health (an unhealthy report is returned, not raised)."""
        response = self._http.get(self._url("/health"))
        if response.status_code in (200, 503):
            try:
                return HealthReport.model_validate(response.json())
            except ValueError:
                pass
        _raise_for(response)
        return HealthReport.model_validate(response.json())

    def close(self) -> None:
        """Close the HTTP connection pool (if this client created it)."""
        if self._owns:
            self._http.close()

    def __enter__(self) -> TaskClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncTaskHandle:
    """A submitted task, seen from an :class:`AsyncTaskClient`."""

    def __init__(self, client: AsyncTaskClient, task_id: str) -> None:
        self.client = client
        self.id = task_id

    async def status(self) -> TaskResult:
        """The task's current status (no result)."""
        return await self.client.status(self.id)

    async def progress(self) -> TaskProgress | None:
        """The last progress the task's handler reported; see :meth:`TaskHandle.progress`."""
        return (await self.status()).progress

    async def result(
        self, timeout: float | None = None, poll_interval: float = DEFAULT_POLL_INTERVAL_S
    ) -> Any:
        """Wait for the task to end; see :meth:`TaskHandle.result`."""
        return await self.client.result(self.id, timeout=timeout, poll_interval=poll_interval)

    async def cancel(self) -> CancelOutcome:
        """Cancel the task."""
        return await self.client.cancel(self.id)

    async def retry(self) -> AsyncTaskHandle:
        """Enqueue the task's payload again; the new task's handle."""
        return await self.client.retry(self.id)

    def __repr__(self) -> str:
        return f"<AsyncTaskHandle {self.id}>"


class AsyncTaskClient:
    """Asynchronous client of a task HTTP API; the same methods as
    :class:`TaskClient`, as coroutines."""

    def __init__(
        self,
        base_url: str = "",
        *,
        timeout: float = 30.0,
        headers: Mapping[str, str] | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self._owns = http_client is None
        self._http = http_client or httpx.AsyncClient(timeout=timeout, headers=dict(headers or {}))
        self._base = base_url.rstrip("/")

    def _url(self, path: str) -> str:
        return f"{self._base}{path}"

    async def submit(
        self,
        task_name: str,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        delay_s: float | None = None,
        eta: datetime | None = None,
        priority: int | None = None,
        webhook_url: str | None = None,
        webhook_events: Collection[str] | None = None,
    ) -> AsyncTaskHandle:
        """Enqueue a task and return its handle at once; with ``delay_s`` or
        ``eta`` (an aware datetime) it runs no earlier than that, with
        ``priority`` (0-9) before ready tasks of lower priorities, and with
        ``webhook_url`` the queue POSTs signed events there (``webhook_events``;
        default: succeeded, failed, cancelled)."""
        response = await self._http.post(
            self._url("/submit"),
            json=_submit_body(
                task_name, args, kwargs, delay_s, eta, priority, webhook_url, webhook_events
            ),
            headers=_headers(idempotency_key),
        )
        _raise_for(response)
        return AsyncTaskHandle(self, str(response.json()["task_id"]))

    def handle(self, task_id: str) -> AsyncTaskHandle:
        """A handle for a task submitted earlier."""
        return AsyncTaskHandle(self, task_id)

    async def status(self, task_id: str) -> TaskResult:
        """A task's status (no result)."""
        response = await self._http.get(self._url(f"/status/{task_id}"))
        _raise_for(response, task_id)
        return _task_result(response.json())

    async def result(
        self,
        task_id: str,
        timeout: float | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL_S,
    ) -> Any:
        """Wait for a task to end; see :meth:`TaskHandle.result`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            response = await self._http.get(self._url(f"/get/{task_id}"))
            if response.status_code != 409 or "status" not in _detail(response)[1]:
                _raise_for(response, task_id)
                return _outcome(response.json())
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"task {task_id} did not end within {timeout}s")
            await asyncio.sleep(poll_interval)

    async def cancel(self, task_id: str) -> CancelOutcome:
        """Cancel a task."""
        response = await self._http.post(self._url(f"/cancel/{task_id}"))
        _raise_for(response, task_id)
        return CancelOutcome.model_validate(response.json())

    async def retry(self, task_id: str) -> AsyncTaskHandle:
        """Enqueue a task's payload again; the new task's handle."""
        response = await self._http.post(self._url(f"/retry/{task_id}"))
        _raise_for(response, task_id)
        return AsyncTaskHandle(self, str(response.json()["task_id"]))

    async def dead_letters(
        self, kind: DeadLetterKind | str = DeadLetterKind.FAILED, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Dead-letter records (JSON objects)."""
        response = await self._http.get(
            self._url("/dead-letters"), params={"kind": DeadLetterKind(kind).value, "limit": limit}
        )
        _raise_for(response)
        records: list[dict[str, Any]] = response.json()
        return records

    async def redrive(
        self, ids: Sequence[str] | None = None, kind: DeadLetterKind | str = DeadLetterKind.FAILED
    ) -> Redriven[AsyncTaskHandle]:
        """Enqueue dead letters again; see :meth:`TaskClient.redrive`."""
        response = await self._http.post(
            self._url("/dead-letters/redrive"),
            json={
                "ids": list(ids) if ids is not None else None,
                "kind": DeadLetterKind(kind).value,
            },
        )
        _raise_for(response)
        redriven: Redriven[AsyncTaskHandle] = _redriven(self, AsyncTaskHandle, response.json())
        return redriven

    async def purge(
        self, kind: DeadLetterKind | str = DeadLetterKind.FAILED, ids: Sequence[str] | None = None
    ) -> int:
        """Delete dead letters; see :meth:`TaskClient.purge`."""
        response = await self._http.post(
            self._url("/dead-letters/purge"), json=_purge_body(kind, ids)
        )
        _raise_for(response)
        return int(response.json()["purged"])

    async def health(self) -> HealthReport:
        """The server's broker health."""
        response = await self._http.get(self._url("/health"))
        if response.status_code in (200, 503):
            try:
                return HealthReport.model_validate(response.json())
            except ValueError:
                pass
        _raise_for(response)
        return HealthReport.model_validate(response.json())

    async def aclose(self) -> None:
        """Close the HTTP connection pool (if this client created it)."""
        if self._owns:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncTaskClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
