"""Settings of the HTTP ingress: limits checked at the edge, what errors show,
and the token of the admin routes."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from taskserve.serialization import MAX_JSON_DEPTH

ID_PATTERN = r"^[A-Za-z0-9_.:\-]+$"
"""Task and dead-letter ids in paths and bodies: letters, digits, ``_ . : -``
(every id taskserve makes, uuid4 text, fits)."""

TASK_NAME_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]+$"
"""Task names: printable text (no NUL, newline or other control character)."""


class HttpSettings(BaseModel):
    """What :func:`~taskserve.http.task_router` accepts and shows.

    Every limit is checked before the body is parsed or the broker is called,
    and appears in the OpenAPI schema (``maxLength``, ``pattern``, the
    documented 413/415 answers). Pass one as ``task_router(config,
    settings=HttpSettings(...))`` or a mapping of its fields.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    max_body_bytes: int | None = Field(
        default=None,
        gt=0,
        description=(
            "Largest request body, counted as it streams in: a larger declared "
            "Content-Length is answered 413 at once, without reading; a body that "
            "grows past it is cut off with 413. Default: twice the queue's "
            "max_payload_bytes (JSON escapes can double a payload), at least 64 KiB."
        ),
    )
    body_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description=(
            "Longest wait for a whole request body; a client that stops sending "
            "(a declared Content-Length never reached) is answered 408."
        ),
    )
    max_json_depth: int = Field(
        default=64,
        ge=2,
        le=MAX_JSON_DEPTH + 1,
        description="Deepest nesting of lists and objects in a JSON body (the body counts).",
    )
    max_task_name_length: int = Field(
        default=200, ge=1, le=1000, description="Longest task name /submit accepts."
    )
    max_id_length: int = Field(
        default=200, ge=36, le=1000, description="Longest task or dead-letter id accepted."
    )
    max_ids: int = Field(
        default=1000, ge=1, le=100_000, description="Most record ids one dead-letter call takes."
    )
    max_list_limit: int = Field(
        default=1000, ge=1, le=100_000, description="Largest ?limit= of GET /dead-letters."
    )
    expose_tracebacks: bool = Field(
        default=False,
        description=(
            "Send tracebacks and server file paths to HTTP clients (in task errors "
            "and dead letters). Off: errors keep their type and message, tracebacks "
            "are empty and absolute paths are shortened to their last part."
        ),
    )
    admin_token: SecretStr | None = Field(
        default=None,
        description=(
            "Bearer token the admin routes (task listing, dead-letter list, redrive, "
            "purge, the dashboard's queue figures and payloads) require; None leaves "
            "them open (or guarded by admin_dependencies only). The dashboard offers "
            "redrive and purge only when the admin routes are protected."
        ),
    )

    def body_limit(self, max_payload_bytes: int) -> int:
        """The body limit in force for a queue with ``max_payload_bytes``."""
        if self.max_body_bytes is not None:
            return self.max_body_bytes
        return max(2 * max_payload_bytes, 64 * 1024)
