"""Text embeddings as queued tasks, computed in batches: the application ``app``.

Two deployments:

* ``Embedder``, the consumer: its ``embed`` handler is batched
  (``@task_handler(batch_max_size=16, batch_wait_timeout_s=0.1)``), so it
  is called with up to 16 ready tasks at once and embeds all their texts in
  one vectorised call of the model. The model is WordLlama's 256-dimension
  one, whose weights and tokenizer ship inside the ``wordllama`` wheel: it
  loads from there, with downloads disabled, so the example runs offline.
  The replica runs up to ``max_ongoing_requests=32`` tasks at once (its
  consumer concurrency), so a second batch gathers while one is embedded.
* ``EmbeddingAPI``, the HTTP ingress: taskserve's routes
  (:func:`taskserve.http.create_task_app`): ``POST /submit`` with
  ``{"task_name": "embed", "kwargs": {"text": "..."}}``, ``GET /status/{id}``,
  ``GET /get/{id}``, ...

Each task's result is ``{"vector": [...256 floats, unit length], "call":
<id of the handler call>, "batch_size": <tasks in that call>}``. A task
whose ``text`` is missing or not a string fails alone (its slot of the
batch's result holds the error); the other tasks of its batch succeed.

``python examples/embeddings/run.py`` starts a local Ray, runs the
application and drives it; the queue engine is the embedded sqlite adapter
unless ``TASKSERVE_EXAMPLE_CONFIG`` names another (``example_config.py``).
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any, cast

from example_config import example_adapter_config
from ray import serve

from taskserve import BatchItem, NonRetryableError, TaskProcessorConfig
from taskserve.http import create_task_app
from taskserve.serve import task_consumer, task_handler

BATCH_MAX_SIZE = 16
"""The most texts embedded in one model call."""
CONCURRENCY = 32
"""Tasks the consumer replica holds at once: two batches."""

processor_config = TaskProcessorConfig(
    queue_name="embeddings_queue",
    adapter_config=example_adapter_config(),
    max_retries=2,
)


def load_model() -> Any:
    """WordLlama's 256-dimension model, from the files its wheel ships (no download)."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    import wordllama  # type: ignore[import-untyped]

    # Importing wordllama sets up the root logger at INFO: keep the replica's as it was.
    root.setLevel(level)
    root.handlers[:] = handlers
    return wordllama.WordLlama.load(
        cache_dir=Path(wordllama.__file__).parent, disable_download=True
    )


def text_of(item: BatchItem) -> str | NonRetryableError:
    """The task's ``text``, or the error that fails the task (it would fail again)."""
    text = item.kwargs.get("text")
    if isinstance(text, str) and text.strip():
        return text
    return NonRetryableError(f"embed takes text=<a non-empty string>, got {text!r}")


@serve.deployment(max_ongoing_requests=CONCURRENCY)
@task_consumer(task_processor_config=processor_config)
class Embedder:
    """The consumer replica: one model, batched calls."""

    def __init__(self) -> None:
        self.model = load_model()

    @task_handler(name="embed", batch_max_size=BATCH_MAX_SIZE, batch_wait_timeout_s=0.1)
    def embed(self, items: list[BatchItem]) -> list[dict[str, Any] | NonRetryableError]:
        """Embed the texts of every task of the batch in one model call."""
        checked = [text_of(item) for item in items]
        texts = [text for text in checked if isinstance(text, str)]
        vectors = iter(self.model.embed(texts, norm=True).tolist() if texts else [])
        call = uuid.uuid4().hex[:8]
        return [
            text
            if isinstance(text, NonRetryableError)
            else {"vector": next(vectors), "call": call, "batch_size": len(items)}
            for text in checked
        ]


@serve.deployment
@serve.ingress(create_task_app(processor_config, task_names=["embed"], title="embeddings"))
class EmbeddingAPI:
    """The HTTP ingress: taskserve's task routes for the ``embed`` task."""

    def __init__(self, consumer: Any) -> None:
        self.consumer = consumer  # keeps the consumer in the application


# Serve's decorators made both classes deployments (which mypy still sees as classes).
app = cast(Any, EmbeddingAPI).bind(cast(Any, Embedder).bind())
