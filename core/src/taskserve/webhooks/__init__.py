"""Completion webhooks: signed, retried, at least once, never blocking a task.

A task asks for one at enqueue (``enqueue_task_sync(..., webhook_url=...,
webhook_events=(...))``, ``POST /submit`` with ``webhook_url``, the clients'
``submit(..., webhook_url=)``); the queue's config must hold a Standard Webhooks
signing secret (:class:`WebhookSettings`, ``TaskProcessorConfig.webhooks``).
The store writes each event's outbox entry in the same step as the state
change it announces (:mod:`taskserve.engine.store`), and every consumer of
the queue delivers due entries from a thread of its own
(:class:`~taskserve.webhooks.sender.WebhookSender`): a crash can make an event
arrive twice, under the same ``webhook-id``, never lose it.

Modules, by job: :mod:`.settings` (the config section and the event names),
:mod:`.targets` (URL and event checks, the refusal of private targets),
:mod:`.events` (event ids, the outbox entry and the body's schema),
:mod:`.signing`, :mod:`.backoff` (the retry schedule), :mod:`.sender`.
"""

from taskserve.lazy import lazy_attributes

__getattr__ = lazy_attributes(
    __name__,
    {
        "DEFAULT_WEBHOOK_EVENTS": "taskserve.webhooks.settings",
        "WebhookEvent": "taskserve.webhooks.settings",
        "WebhookSettings": "taskserve.webhooks.settings",
        "new_signing_secret": "taskserve.webhooks.settings",
        "WebhookDelivery": "taskserve.webhooks.events",
        "event_body": "taskserve.webhooks.events",
        "event_id": "taskserve.webhooks.events",
        "WebhookTarget": "taskserve.webhooks.targets",
        "WebhookTargetRefused": "taskserve.webhooks.targets",
        "webhook_target": "taskserve.webhooks.targets",
        "WebhookSender": "taskserve.webhooks.sender",
    },
)

__all__ = [
    "DEFAULT_WEBHOOK_EVENTS",
    "WebhookDelivery",
    "WebhookEvent",
    "WebhookSender",
    "WebhookSettings",
    "WebhookTarget",
    "WebhookTargetRefused",
    "event_body",
    "event_id",
    "new_signing_secret",
    "webhook_target",
]
