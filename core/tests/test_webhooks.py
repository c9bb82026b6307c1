"""Webhook rules that need no broker: the config section and its secret, the
checks of a task's webhook at enqueue (URL, events, private targets, DNS names
resolving to private addresses), signing, the retry schedule and the body."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from taskserve import (
    REVEAL_SECRETS,
    Capability,
    ConfigError,
    InvalidArgument,
    TaskError,
    TaskProcessorConfig,
    UnsupportedCapability,
    instantiate_adapter_from_config,
)
from taskserve.adapters.sqlite import SqliteAdapter
from taskserve.client import AsyncTaskClient, TaskClient
from taskserve.http import create_task_app
from taskserve.webhooks.backoff import next_try_at, retry_delay_s, schedule
from taskserve.webhooks.events import (
    WebhookDelivery,
    error_data,
    event_body,
    event_id,
    result_data,
)
from taskserve.webhooks.sender import _pinned
from taskserve.webhooks.settings import (
    DEFAULT_WEBHOOK_EVENTS,
    WebhookEvent,
    WebhookSettings,
    new_signing_secret,
)
from taskserve.webhooks.signing import Signer
from taskserve.webhooks.targets import (
    WebhookTargetRefused,
    pinned_address,
    public_addresses,
    webhook_target,
)

SECRET = new_signing_secret()
ENABLED = WebhookSettings(signing_secret=SECRET)
PUBLIC = "93.184.216.34"


def _resolver(*addresses: str) -> Any:
    def resolve(host: str, port: int) -> Sequence[str]:
        return list(addresses)

    return resolve


def _no_lookup(host: str, port: int) -> Sequence[str]:
    raise AssertionError(f"{host} was looked up")


# -- the config section ---------------------------------------------------------------
def test_the_signing_secret_is_checked_and_never_shown() -> None:
    config = TaskProcessorConfig(queue_name="q", webhooks={"signing_secret": SECRET})
    key = SECRET.removeprefix("whsec_")
    for text in (
        repr(config),
        str(config.webhooks),
        json.dumps(config.model_dump(mode="json")),
        config.model_dump_json(),
    ):
        assert key not in text
    revealed = config.model_dump(mode="json", context=REVEAL_SECRETS)
    assert revealed["webhooks"]["signing_secret"] == SECRET
    assert TaskProcessorConfig.from_dict(revealed).webhooks == config.webhooks


@pytest.mark.parametrize(
    ("secret", "says"),
    [
        ("c2VjcmV0", "'whsec_' followed by base64"),
        ("whsec_not base64!", "not base64"),
        ("whsec_" + base64.b64encode(b"short").decode(), "24 to 64 bytes"),
    ],
)
def test_a_bad_signing_secret_is_refused_naming_the_field(secret: str, says: str) -> None:
    with pytest.raises(ConfigError) as raised:
        TaskProcessorConfig(queue_name="q", webhooks={"signing_secret": secret})
    assert "webhooks.signing_secret" in str(raised.value) and says in str(raised.value)
    assert secret not in str(raised.value)


def test_bad_webhook_settings_name_their_fields() -> None:
    problems = TaskProcessorConfig.find_problems(
        {"queue_name": "q", "webhooks": {"timeout_s": 0, "retry_backoff_s": -1, "secret": "x"}}
    )
    assert any(p.startswith("webhooks.timeout_s:") for p in problems), problems
    assert any(p.startswith("webhooks.retry_backoff_s:") for p in problems), problems
    assert any(p.startswith("webhooks.secret: unknown field") for p in problems), problems
    with pytest.raises(ValueError, match=r"retry_backoff_s \(10\) is above retry_backoff_max_s"):
        WebhookSettings(retry_backoff_s=10, retry_backoff_max_s=5)


# -- a task's webhook, checked at enqueue -------------------------------------------------
def test_without_a_signing_secret_no_task_may_ask_for_a_webhook() -> None:
    with pytest.raises(ConfigError, match=r"webhooks\.signing_secret"):
        webhook_target(f"https://{PUBLIC}/hook", None, WebhookSettings(), resolve=_no_lookup)


def test_the_default_events_are_the_ends_of_a_task() -> None:
    target = webhook_target(f"https://{PUBLIC}/hook", None, ENABLED, resolve=_no_lookup)
    assert target.events == DEFAULT_WEBHOOK_EVENTS
    assert {e.value for e in target.events} == {"succeeded", "failed", "cancelled"}
    chosen = webhook_target(
        f"http://{PUBLIC}/", ["progress", "started", "progress"], ENABLED, resolve=_no_lookup
    )
    assert chosen.events == (WebhookEvent.PROGRESS, WebhookEvent.STARTED)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("ftp://example.com/hook", "http:// or https://"),
        ("file:///etc/passwd", "http:// or https://"),
        ("https:///path", "has no host"),
        ("https://exa mple.com/", "spaces or control characters"),
        ("https://example.com:99999/", "not a valid URL"),
        ("https://example.com/" + "x" * 3000, "over the limit"),
        (42, "must be a str"),
    ],
)
def test_a_bad_webhook_url_is_refused_saying_why(url: Any, says: str) -> None:
    with pytest.raises(InvalidArgument, match="webhook_url") as raised:
        webhook_target(url, None, ENABLED, resolve=_no_lookup)
    assert says in str(raised.value)


@pytest.mark.parametrize(
    ("events", "says"),
    [
        (["succeeded", "finished"], "unknown event 'finished'; the events are started, progress"),
        ([], "at least one event"),
        ("succeeded", "must be a list of event names"),
    ],
)
def test_bad_webhook_events_are_refused_naming_them(events: Any, says: str) -> None:
    with pytest.raises(InvalidArgument, match="webhook_events") as raised:
        webhook_target(f"https://{PUBLIC}/", events, ENABLED, resolve=_no_lookup)
    assert says in str(raised.value)


def test_events_without_a_url_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="webhook_events needs a webhook_url"):
        webhook_target(None, ["succeeded"], ENABLED, resolve=_no_lookup)


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "100.64.0.1",  # shared address space
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "[::1]",
        "[fe80::1]",
        "[fd00::1]",
        "[::ffff:127.0.0.1]",
        "[::ffff:10.0.0.1]",
    ],
)
def test_a_private_address_is_refused(host: str) -> None:
    with pytest.raises(WebhookTargetRefused, match="allow_private_targets"):
        webhook_target(f"http://{host}:8080/hook", None, ENABLED, resolve=_no_lookup)


def test_a_name_resolving_to_a_private_address_is_refused() -> None:
    with pytest.raises(WebhookTargetRefused, match=r"resolves to 127\.0\.0\.1"):
        webhook_target("http://localhost:8080/hook", None, ENABLED)  # the real resolver
    resolve = _resolver(PUBLIC, "10.0.0.7")  # one private address among public ones
    with pytest.raises(WebhookTargetRefused, match=r"resolves to 10\.0\.0\.7"):
        webhook_target("https://hooks.example.com/", None, ENABLED, resolve=resolve)
    with pytest.raises(WebhookTargetRefused, match=r"resolves to ::1"):
        webhook_target("https://hooks.example.com/", None, ENABLED, resolve=_resolver("::1"))


def test_a_public_target_is_accepted() -> None:
    target = webhook_target(
        "https://hooks.example.com/t?token=x", None, ENABLED, resolve=_resolver(PUBLIC)
    )
    assert target.url == "https://hooks.example.com/t?token=x"
    assert webhook_target(f"http://{PUBLIC}:8443/", None, ENABLED, resolve=_no_lookup)


def test_a_name_that_does_not_resolve_is_refused() -> None:
    def fail(host: str, port: int) -> Sequence[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.raises(WebhookTargetRefused, match="does not resolve"):
        webhook_target("https://nowhere.invalid/", None, ENABLED, resolve=fail)


def test_allowed_private_targets_are_not_looked_up() -> None:
    allowed = WebhookSettings(signing_secret=SECRET, allow_private_targets=True)
    target = webhook_target("http://localhost:9/hook", None, allowed, resolve=_no_lookup)
    assert target.url == "http://localhost:9/hook"
    assert pinned_address(target.url, allowed, _no_lookup) is None


def test_a_name_rebound_to_a_private_address_is_refused_at_delivery() -> None:
    url = "https://hooks.example.com/t"
    assert webhook_target(url, None, ENABLED, resolve=_resolver(PUBLIC))
    with pytest.raises(WebhookTargetRefused, match=r"resolves to 169\.254\.169\.254"):
        pinned_address(url, ENABLED, _resolver("169.254.169.254"))
    assert pinned_address(url, ENABLED, _resolver(PUBLIC, "2606:2800:220:1::")) == PUBLIC


def test_a_delivery_connects_to_the_checked_address_with_the_original_host() -> None:
    url, headers, extensions = _pinned("https://user:pw@hooks.example.com:8443/a?b=1", PUBLIC)
    assert url == f"https://user:pw@{PUBLIC}:8443/a?b=1"
    assert headers == {"host": "hooks.example.com:8443"}
    assert extensions == {"sni_hostname": "hooks.example.com"}
    url, headers, extensions = _pinned("http://hooks.example.com/x", "2606:2800:220:1::")
    assert url == "http://[2606:2800:220:1::]/x"
    assert headers == {"host": "hooks.example.com"} and extensions == {}


def test_public_addresses_lists_every_address_checked() -> None:
    found = public_addresses("https://a.example/", _resolver(PUBLIC, "2606:2800:220:1::"))
    assert found == [PUBLIC, "2606:2800:220:1::"]


# -- the adapter's enqueue ------------------------------------------------------------------
def _sqlite(tmp_path: Path, **settings: Any) -> TaskProcessorConfig:
    return TaskProcessorConfig(
        queue_name="hooks",
        adapter_config={"path": str(tmp_path / "q.db")},
        webhooks=settings,
    )


def test_enqueue_checks_the_webhook_before_anything_is_queued(tmp_path: Path) -> None:
    adapter = instantiate_adapter_from_config(_sqlite(tmp_path, signing_secret=SECRET))
    try:
        with pytest.raises(WebhookTargetRefused, match="allow_private_targets"):
            adapter.enqueue_task_sync("t", webhook_url="http://127.0.0.1:1/hook")
        with pytest.raises(InvalidArgument, match="unknown event 'done'"):
            adapter.enqueue_task_sync("t", webhook_url=f"http://{PUBLIC}/", webhook_events=["done"])
        assert adapter.get_metrics_sync().queue_depth == 0
        task = adapter.enqueue_task_sync(
            "t", webhook_url=f"https://{PUBLIC}/h", webhook_events=["started"]
        )
        message = adapter.get_task_payload_sync(task.id)
        assert (message.webhook_url, message.webhook_events) == (
            f"https://{PUBLIC}/h",
            ("started",),
        )
    finally:
        adapter.shutdown()


def test_enqueue_without_a_secret_says_what_to_set(tmp_path: Path) -> None:
    adapter = instantiate_adapter_from_config(_sqlite(tmp_path))
    try:
        with pytest.raises(ConfigError, match=r"set webhooks\.signing_secret"):
            adapter.enqueue_task_sync("t", webhook_url=f"https://{PUBLIC}/")
    finally:
        adapter.shutdown()


class WithoutWebhooks(SqliteAdapter):
    alias = "no-webhooks"
    capabilities = frozenset(Capability) - {Capability.WEBHOOKS}


def test_an_adapter_without_the_capability_refuses_webhooks(tmp_path: Path) -> None:
    adapter = WithoutWebhooks(_sqlite(tmp_path, signing_secret=SECRET))
    try:
        with pytest.raises(UnsupportedCapability, match="webhooks"):
            adapter.enqueue_task_sync("t", webhook_url=f"https://{PUBLIC}/")
    finally:
        adapter.shutdown()


# -- signing ----------------------------------------------------------------------------------
def test_a_signed_delivery_verifies_with_standardwebhooks() -> None:
    body = '{"type":"task.succeeded"}'
    headers = Signer(SECRET).headers("evt_t_succeeded", body)
    assert headers["webhook-id"] == "evt_t_succeeded"
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(SECRET).verify(body, headers) == {"type": "task.succeeded"}
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body.replace("succeeded", "failed"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_signing_secret()).verify(body, headers)


# -- the retry schedule ------------------------------------------------------------------------
def test_the_default_schedule_makes_ten_tries_within_an_hour() -> None:
    pauses = schedule(WebhookSettings())
    assert pauses == [5, 10, 20, 40, 80, 160, 320, 640, 900]
    assert len(pauses) + 1 == 10 and sum(pauses) < 3600


def test_retries_stop_at_the_window_and_at_the_last_try() -> None:
    settings = WebhookSettings(
        retry_backoff_s=10, retry_backoff_max_s=10, delivery_window_s=25, max_deliveries=5
    )
    assert retry_delay_s(settings, 1) == 10
    assert next_try_at(settings, 1, created_at=0, now=1) == 11
    assert next_try_at(settings, 2, created_at=0, now=16) is None  # due at 26: past the window
    assert next_try_at(settings, 2, created_at=0, now=12) == 22
    assert next_try_at(settings, 5, created_at=0, now=1) is None  # the last try
    assert schedule(settings) == [10, 10]


# -- the body ------------------------------------------------------------------------------------
def _delivery(event: WebhookEvent, data: str | None, attempt: int = 1) -> WebhookDelivery:
    return WebhookDelivery(
        id=event_id("t1", event, attempt if event is WebhookEvent.STARTED else None),
        task_id="t1",
        task_name="index",
        queue_name="docs",
        event=event,
        url=f"https://{PUBLIC}/",
        attempt=attempt,
        data=data,
        created_at=1764765247.99,
        deliveries=1,
    )


def test_the_body_has_the_documented_schema() -> None:
    body = json.loads(event_body(_delivery(WebhookEvent.SUCCEEDED, result_data('{"n":1}', 100))))
    assert body == {
        "type": "task.succeeded",
        "timestamp": "2025-12-03T12:34:07.990Z",
        "data": {
            "task_id": "t1",
            "task_name": "index",
            "queue": "docs",
            "status": "SUCCESS",
            "attempt": 1,
            "result": {"n": 1},
        },
    }
    assert _delivery(WebhookEvent.STARTED, None, 3).id == "evt_t1_started_3"
    started = json.loads(event_body(_delivery(WebhookEvent.STARTED, None, 3)))
    assert (started["type"], started["data"]["status"], started["data"]["attempt"]) == (
        "task.started",
        "STARTED",
        3,
    )


def test_a_large_result_is_left_out_and_an_error_keeps_no_traceback() -> None:
    assert json.loads(result_data('"' + "x" * 200 + '"', 100)) == {"result_omitted": True}
    error = TaskError(type="ValueError", message="bad " * 1000, traceback="Traceback ...")
    body = json.loads(event_body(_delivery(WebhookEvent.FAILED, error_data(error))))
    assert set(body["data"]["error"]) == {"type", "message"}
    assert body["data"]["status"] == "FAILURE" and len(body["data"]["error"]["message"]) == 2000


# -- HTTP and the clients ----------------------------------------------------------------------
@pytest.fixture
def http(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_task_app(_sqlite(tmp_path, signing_secret=SECRET))) as client:
        yield client


def test_submit_takes_a_webhook(http: TestClient) -> None:
    response = http.post(
        "/submit",
        json={"task_name": "t", "webhook_url": f"https://{PUBLIC}/h", "webhook_events": ["failed"]},
    )
    assert response.status_code == 202, response.text


@pytest.mark.parametrize(
    ("webhook", "says"),
    [
        ({"webhook_url": "http://127.0.0.1:8080/h"}, "allow_private_targets"),
        ({"webhook_url": "http://localhost/h"}, "resolves to 127.0.0.1"),
        ({"webhook_url": "ftp://example.com/h"}, "webhook_url"),
        ({"webhook_url": f"http://{PUBLIC}/", "webhook_events": ["done"]}, "webhook_events"),
        ({"webhook_url": f"http://{PUBLIC}/", "webhook_events": []}, "webhook_events"),
        ({"webhook_events": ["failed"]}, "webhook_events needs a webhook_url"),
    ],
)
def test_a_bad_webhook_is_a_422_naming_it(
    http: TestClient, webhook: dict[str, Any], says: str
) -> None:
    response = http.post("/submit", json={"task_name": "t", **webhook})
    assert response.status_code == 422, response.text
    assert says in response.text


def test_a_queue_without_a_secret_answers_409(tmp_path: Path) -> None:
    with TestClient(create_task_app(_sqlite(tmp_path))) as http:
        response = http.post("/submit", json={"task_name": "t", "webhook_url": f"http://{PUBLIC}/"})
    assert response.status_code == 409
    assert "webhooks.signing_secret" in response.json()["detail"]


def test_the_clients_send_the_webhook(http: TestClient, tmp_path: Path) -> None:
    url = f"https://{PUBLIC}/h"
    handle = TaskClient(http_client=http).submit("t", webhook_url=url, webhook_events=["started"])
    adapter = instantiate_adapter_from_config(_sqlite(tmp_path, signing_secret=SECRET))
    try:
        message = adapter.get_task_payload_sync(handle.id)
        assert (message.webhook_url, message.webhook_events) == (url, ("started",))
    finally:
        adapter.shutdown()
    with pytest.raises(InvalidArgument, match="unknown event 'done'"):
        TaskClient(http_client=http).submit("t", webhook_url=url, webhook_events=["done"])

    async def submit_async() -> str:
        transport = httpx.ASGITransport(app=http.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            handle = await AsyncTaskClient(http_client=client).submit("t", webhook_url=url)
            return handle.id

    assert asyncio.run(submit_async())
