"""Delivering a queue's webhook events: a thread of every consumer.

A handler never waits for a webhook: the store writes each event's outbox
entry in the step that records the state change, and a consumer's
:class:`WebhookSender` delivers them, in a thread of its own, with up to
``concurrency`` requests at once. It claims due entries with a lease
(``WebhookSettings.lease_s``), so a consumer that dies while sending loses
nothing: its entries come due again and any live consumer of the queue sends
them. The sender is a lifecycle hook plugin while it runs
(:mod:`.hooks`): its queue's events wake it, so that a delivery begins as soon
as its state change is recorded; the outbox, not the hook, is what it sends.
Each try is a signed POST of the event's body (:mod:`.signing`,
:func:`~taskserve.webhooks.events.event_body`); a 2xx answer deletes the
entry, anything else (a non-2xx status, a network error or timeout, a target
refused as private at delivery time) schedules the next try
(:mod:`.backoff`), and an event out of tries is given up with a warning on the
``taskserve.webhooks`` logger, counted in :attr:`WebhookSender.given_up`.
Redirects are not followed (a redirect is a refusal).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from taskserve.config import TaskProcessorConfig
from taskserve.engine.pool import DaemonThreadExecutor
from taskserve.engine.store import TaskStore, WebhookOutbox
from taskserve.plugins import get_plugin_manager
from taskserve.redaction import redact_url
from taskserve.webhooks.backoff import next_try_at
from taskserve.webhooks.events import WebhookDelivery, event_body
from taskserve.webhooks.hooks import SenderWakeHooks
from taskserve.webhooks.settings import WebhookSettings
from taskserve.webhooks.signing import Signer
from taskserve.webhooks.targets import Resolver, WebhookTargetRefused, pinned_address, resolve_host

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger("taskserve.webhooks")


def webhook_sender(
    store: TaskStore, config: TaskProcessorConfig, owner: str
) -> WebhookSender | None:
    """The sender a consumer of ``config`` runs on ``store`` as ``owner``: None
    unless the config has a signing secret and the store keeps an outbox. The
    store is told to write events in the same transaction as their state
    changes from now on."""
    settings = config.webhooks
    if not settings.enabled or not isinstance(store, WebhookOutbox):
        return None
    store.expect_webhooks(settings)
    return WebhookSender(store, settings, config.queue_name, owner)


def _pinned(url: str, address: str) -> tuple[str, dict[str, str], dict[str, Any]]:
    """``url`` sent to ``address`` (the address that was checked): the URL with
    that address as its host, the ``Host`` header and the TLS server name of
    the original host."""
    parts = urlsplit(url)
    host = str(parts.hostname)
    port = "" if parts.port is None else f":{parts.port}"
    userinfo, at, _ = parts.netloc.rpartition("@")
    shown = f"[{address}]" if ":" in address else address
    target = urlunsplit((parts.scheme, f"{userinfo}{at}{shown}{port}", parts.path, parts.query, ""))
    header = (f"[{host}]" if ":" in host else host) + port
    extensions: dict[str, Any] = {}
    if parts.scheme.lower() == "https":
        extensions["sni_hostname"] = host
    return target, {"host": header}, extensions


class WebhookSender:
    """Delivers the due events of one queue's outbox (see the module docstring)."""

    def __init__(
        self,
        outbox: WebhookOutbox,
        settings: WebhookSettings,
        queue_name: str,
        owner: str,
        *,
        client: httpx.Client | None = None,
        resolve: Resolver = resolve_host,
    ) -> None:
        import httpx

        secret = settings.signing_secret
        if secret is None:
            raise ValueError("a webhook sender needs webhooks.signing_secret")
        self.outbox = outbox
        self.settings = settings
        self.queue_name = queue_name
        self.owner = owner
        self._signer = Signer(secret.get_secret_value())
        self._resolve = resolve
        self._owns_client = client is None
        self._client = client or httpx.Client(
            timeout=httpx.Timeout(settings.timeout_s),
            follow_redirects=False,
            trust_env=False,
            headers={"user-agent": "taskserve-webhooks"},
        )
        self._stop = threading.Event()
        self._woken = threading.Event()
        self._hooks = SenderWakeHooks(self)
        self._thread: threading.Thread | None = None
        self._pool: DaemonThreadExecutor | None = None
        self._lock = threading.Lock()
        self.delivered = 0
        """Events delivered (a 2xx answer)."""
        self.refused = 0
        """Tries that failed (a non-2xx answer, a network error, a refused target)."""
        self.given_up = 0
        """Events given up after their last try."""

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> None:
        """Start the sending thread, woken by the queue's lifecycle events."""
        if self._thread is not None:
            return
        get_plugin_manager().register(self._hooks)
        self._pool = DaemonThreadExecutor(self.settings.concurrency, "taskserve-webhooks-send")
        self._thread = threading.Thread(
            target=self._loop, name=f"taskserve-webhooks-{self.queue_name[:40]}", daemon=True
        )
        self._thread.start()

    def alive(self) -> bool:
        """Whether the sending thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop claiming, wait up to ``timeout`` s for the tries under way, and
        close the connections; entries left leased come due after their lease."""
        self._stop.set()
        self._woken.set()
        manager = get_plugin_manager()
        if manager.is_registered(self._hooks):
            manager.unregister(self._hooks)
        if self._thread is not None:
            self._thread.join(timeout)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        if self._owns_client:
            self._client.close()

    def wake(self) -> None:
        """Look for due events now rather than at the next poll."""
        self._woken.set()

    def _loop(self) -> None:
        failing = False
        while not self._stop.is_set():
            try:
                sent = self.send_due()
                failing = False
            except Exception as e:
                # The store is unreachable, say: log once per outage, try again later.
                if not failing:
                    logger.warning(
                        "taskserve: could not read the webhook events of queue '%s': %s: %s",
                        self.queue_name,
                        type(e).__name__,
                        e,
                    )
                failing, sent = True, 0
            if not sent:
                self._woken.wait(self.settings.poll_interval_s)
                self._woken.clear()

    # -- one round ------------------------------------------------------------------
    def send_due(self) -> int:
        """Claim the events due now (at most ``concurrency``), try each once and
        record the outcome; return how many were tried."""
        claimed = self.outbox.claim_webhooks(
            self.owner, self.settings.lease_s, self.settings.concurrency
        )
        if not claimed:
            return 0
        pool = self._pool
        if pool is None or len(claimed) == 1:
            for delivery in claimed:
                self.deliver(delivery)
            return len(claimed)
        futures: list[Future[Any]] = [pool.submit(self.deliver, d) for d in claimed]
        for future in futures:
            try:
                future.result()
            except Exception:
                logger.exception("taskserve: a webhook delivery of '%s' failed", self.queue_name)
        return len(claimed)

    def deliver(self, delivery: WebhookDelivery) -> bool:
        """Try ``delivery`` once and record the outcome in the outbox; True when
        the receiver accepted it."""
        error = self._send(delivery)
        if error is None:
            self.outbox.finish_webhook(delivery.id)
            with self._lock:
                self.delivered += 1
            return True
        with self._lock:
            self.refused += 1
        now = time.time()
        due = next_try_at(self.settings, delivery.deliveries, delivery.created_at, now)
        if due is None:
            logger.warning(
                "taskserve: gave up on webhook event %s (%s of task %s) to %s after %d "
                "tries over %.0fs; last error: %s",
                delivery.id,
                delivery.event.type,
                delivery.task_id,
                redact_url(delivery.url),
                delivery.deliveries,
                now - delivery.created_at,
                error,
            )
            self.outbox.finish_webhook(delivery.id)
            with self._lock:
                self.given_up += 1
            return False
        logger.info(
            "taskserve: webhook event %s to %s failed (%s); try %d in %.1fs",
            delivery.id,
            redact_url(delivery.url),
            error,
            delivery.deliveries + 1,
            due - now,
        )
        self.outbox.retry_webhook(delivery.id, self.owner, due - now, error)
        return False

    def _send(self, delivery: WebhookDelivery) -> str | None:
        """POST the signed event; None when accepted, else what went wrong."""
        import httpx

        body = event_body(delivery)
        try:
            address = pinned_address(delivery.url, self.settings, self._resolve)
        except WebhookTargetRefused as e:
            logger.warning("taskserve: webhook event %s not sent: %s", delivery.id, e)
            return f"refused: {e}"
        url, headers, extensions = delivery.url, dict[str, str](), dict[str, Any]()
        if address is not None:
            url, headers, extensions = _pinned(delivery.url, address)
        headers.update(self._signer.headers(delivery.id, body))
        try:
            response = self._client.post(
                url, content=body.encode(), headers=headers, extensions=extensions
            )
        except httpx.HTTPError as e:
            return redact_url(f"{type(e).__name__}: {e}")
        if 200 <= response.status_code < 300:
            return None
        return f"HTTP {response.status_code}"
