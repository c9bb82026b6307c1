"""The ``webhooks`` section of :class:`~taskserve.TaskProcessorConfig`.

It says how the consumers of a queue sign, send and retry the events of the
tasks that asked for a webhook (``enqueue_task_sync(..., webhook_url=...)``):
the Standard Webhooks signing secret (``whsec_`` and base64; a
:class:`~pydantic.SecretStr`, redacted in every dump unless the dump says
:data:`~taskserve.REVEAL_SECRETS`), whether private addresses may be targets,
the timeout of one delivery, the retry schedule and its bound, and the
interval of progress events. A task may ask for a webhook only when the
section holds a signing secret.
"""

from __future__ import annotations

import base64
import binascii
import enum
import secrets
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    SecretStr,
    SerializationInfo,
    model_validator,
)

from taskserve.redaction import REVEAL_SECRETS


class WebhookEvent(enum.StrEnum):
    """A step of a task's life a webhook can be sent for; the body's ``type``
    is ``task.<value>`` (``task.succeeded``)."""

    STARTED = "started"
    """A delivery of the task began (its status became STARTED); one per attempt."""
    PROGRESS = "progress"
    """The running handler reported progress (at most one per
    ``progress_interval_s``, and the last report always)."""
    SUCCEEDED = "succeeded"
    """The handler returned; its result is stored."""
    FAILED = "failed"
    """The task failed for good (its last attempt, a non-retryable error, an
    unknown task name)."""
    CANCELLED = "cancelled"
    """The task's status became CANCELLED."""
    DEAD_LETTERED = "dead_lettered"
    """The failed task's record was written to the failed (or unprocessable)
    dead-letter queue."""

    @property
    def type(self) -> str:
        """The ``type`` of the event's body: ``task.<event>``."""
        return f"task.{self.value}"


DEFAULT_WEBHOOK_EVENTS: tuple[WebhookEvent, ...] = (
    WebhookEvent.SUCCEEDED,
    WebhookEvent.FAILED,
    WebhookEvent.CANCELLED,
)
"""The events a task gets when it gives a ``webhook_url`` and no
``webhook_events``: the ends of its life."""

SECRET_PREFIX = "whsec_"
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64
"""A Standard Webhooks secret holds 24 to 64 bytes of key."""


def new_signing_secret() -> str:
    """A fresh signing secret (32 random bytes), for ``webhooks.signing_secret``."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _check_secret(value: SecretStr) -> SecretStr:
    text = value.get_secret_value()
    if not text.startswith(SECRET_PREFIX):
        raise ValueError(
            f"must be a Standard Webhooks secret: '{SECRET_PREFIX}' followed by base64 "
            "(taskserve.webhooks.new_signing_secret() makes one)"
        )
    key = text[len(SECRET_PREFIX) :]
    try:
        raw = base64.b64decode(key + "=" * (-len(key) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"the part after '{SECRET_PREFIX}' is not base64") from None
    if not MIN_SECRET_BYTES <= len(raw) <= MAX_SECRET_BYTES:
        raise ValueError(
            f"must hold {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes of key, it holds {len(raw)}"
        )
    return value


def _dump_secret(value: SecretStr, info: SerializationInfo) -> Any:
    context = info.context
    if isinstance(context, dict) and all(context.get(k) == v for k, v in REVEAL_SECRETS.items()):
        return value.get_secret_value()
    return str(value) if info.mode == "json" else value


SigningSecret = Annotated[
    SecretStr, AfterValidator(_check_secret), PlainSerializer(_dump_secret, return_type=Any)
]
"""A Standard Webhooks secret, redacted in reprs and dumps (:data:`REVEAL_SECRETS`
dumps the real value, for configs passed to another process)."""


class WebhookSettings(BaseModel):
    """How a queue's consumers deliver webhooks (``TaskProcessorConfig.webhooks``).

    A delivery is one signed POST; a 2xx answer ends it. Any other answer, or a
    network error, is retried after ``retry_backoff_s``, doubled each time up
    to ``retry_backoff_max_s``, for at most ``max_deliveries`` tries and never
    later than ``delivery_window_s`` after the event; then it is given up with
    a warning on the ``taskserve.webhooks`` logger. The defaults make 10 tries
    within about 36 minutes.
    """

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True, frozen=True)

    signing_secret: SigningSecret | None = Field(
        default=None,
        description=(
            "The Standard Webhooks secret deliveries are signed with ('whsec_' and the "
            "base64 of 24 to 64 bytes); required before a task may ask for a webhook."
        ),
    )
    allow_private_targets: bool = Field(
        default=False,
        description=(
            "Allow webhook URLs whose host is (or resolves to) a loopback, private, "
            "link-local or reserved address; off, such targets are refused at enqueue and "
            "again at each delivery."
        ),
    )
    timeout_s: float = Field(
        default=10.0, gt=0, le=300, allow_inf_nan=False, description="Timeout of one delivery."
    )
    retry_backoff_s: float = Field(
        default=5.0,
        gt=0,
        allow_inf_nan=False,
        description="Pause before the first retry of a delivery, doubled each retry.",
    )
    retry_backoff_max_s: float = Field(
        default=900.0, gt=0, allow_inf_nan=False, description="Longest pause between retries."
    )
    max_deliveries: int = Field(
        default=10, ge=1, le=100, description="Most tries of one event (the first included)."
    )
    delivery_window_s: float = Field(
        default=3600.0,
        gt=0,
        allow_inf_nan=False,
        description="No event is tried later than this long after it happened.",
    )
    progress_interval_s: float = Field(
        default=1.0,
        ge=0.05,
        allow_inf_nan=False,
        description=(
            "Shortest time between two progress events of one task (the last report is "
            "always sent)."
        ),
    )
    max_result_bytes: int = Field(
        default=16 * 1024,
        ge=0,
        le=1024 * 1024,
        description=(
            "A succeeded event carries the result when its JSON is at most this many "
            "bytes; a larger one is left out (result_omitted: true)."
        ),
    )
    poll_interval_s: float = Field(
        default=0.5,
        gt=0,
        le=60,
        allow_inf_nan=False,
        description="How often an idle consumer looks for events due to be sent.",
    )
    concurrency: int = Field(
        default=4, ge=1, le=64, description="Deliveries one consumer sends at once."
    )

    @model_validator(mode="after")
    def _backoff_within_cap(self) -> WebhookSettings:
        if self.retry_backoff_s > self.retry_backoff_max_s:
            raise ValueError(
                f"retry_backoff_s ({self.retry_backoff_s:g}) is above retry_backoff_max_s "
                f"({self.retry_backoff_max_s:g})"
            )
        return self

    @property
    def enabled(self) -> bool:
        """Whether tasks may ask for webhooks (a signing secret is set)."""
        return self.signing_secret is not None

    @property
    def lease_s(self) -> float:
        """How long a consumer holds an event it is sending: another consumer takes
        it over after this (its sender died). Covers one delivery's connect,
        write and read timeouts."""
        return 3 * self.timeout_s + 1.0
