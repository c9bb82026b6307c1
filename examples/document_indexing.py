"""The document-indexing example of Ray Serve's async-inference guide, on taskserve.

The code below the imports is the guide's, unchanged except for two things a
runnable example needs: the adapter config comes from configuration
(:mod:`example_config`: sqlite by default, any installed plugin by YAML), and
``DocumentIndexingEngine`` ("your implementation" in the guide) is a small
offline one; and one thing taskserve adds: the handler reports its progress
(``current_task().report_progress``), which the task's status shows. ``serve.run(app_graph)`` runs only when this file is executed;
``quickstart.py`` imports ``app_graph`` and drives it over HTTP.

The guide's deployments ask for a CPU per replica, three in all. Executed, this
file first starts a local Ray with that many logical CPUs (``example_ray.py``;
Serve on port ``TASKSERVE_EXAMPLE_PORT``, default 8000), so it runs on a
two-core machine::

    python examples/document_indexing.py

``serve run document_indexing:app_graph`` starts a Ray with the machine's own
CPUs instead, and needs three; ``serve run document_indexing_serve.yaml`` (in
this folder) gives each replica a fraction of a CPU, without a code change.
"""

import hashlib
import re
import time
import urllib.request
from collections import Counter

from example_config import example_adapter_config
from fastapi import FastAPI, Request
from ray import serve

from taskserve import (
    TaskProcessorConfig,
    TaskResult,
    current_task,
    instantiate_adapter_from_config,
)
from taskserve.http import task_router
from taskserve.serve import task_consumer, task_handler


class DocumentIndexingEngine:
    """Reads a document (``file://`` or ``http(s)://`` URL) and indexes its words."""

    seconds_per_kilobyte = 1.5
    """Simulated model time, so that progress can be watched."""
    steps = 4
    """Parts the simulated model time is spent in (one progress report each)."""

    def download(self, document_url: str) -> str:
        with urllib.request.urlopen(document_url, timeout=30) as response:
            return response.read().decode("utf-8", errors="replace")

    def process(self, content: str, on_progress=lambda fraction: None) -> dict:
        words = re.findall(r"[a-z']+", content.lower())
        seconds = min(1.0 + self.seconds_per_kilobyte * len(content) / 1024, 5.0)
        for step in range(1, self.steps + 1):
            time.sleep(seconds / self.steps)
            on_progress(step / self.steps)
        return {
            "words": len(words),
            "top_terms": [w for w, _ in Counter(w for w in words if len(w) > 3).most_common(3)],
            "fingerprint": hashlib.sha256(content.encode()).hexdigest()[:16],
        }


# 1) Configure the adapter (taskserve: selected by configuration, see example_config.py)
celery_config = example_adapter_config()

# 2) Configure the task processor
processor_config = TaskProcessorConfig(
    queue_name="document_indexing_queue",
    adapter_config=celery_config,
    max_retries=3,
    failed_task_queue_name="doc_failed",
)


# 3) Define the consumer deployment for background processing
@serve.deployment(num_replicas=2)
@task_consumer(task_processor_config=processor_config)
class DocumentIndexingConsumer:
    def __init__(self):
        self.indexer = DocumentIndexingEngine()  # Your implementation

    @task_handler(name="index_document")
    def index_document(self, document_id: str, document_url: str) -> dict:
        task = current_task()  # taskserve: progress reports, shown in the task's status
        content = self.indexer.download(document_url)
        task.report_progress(0.1, "downloaded", {"bytes": len(content)})
        metadata = self.indexer.process(
            content, on_progress=lambda done: task.report_progress(0.1 + 0.9 * done, "indexing")
        )
        return {"document_id": document_id, "status": "indexed", "metadata": metadata}


# 4) Define an ingress deployment to submit tasks and fetch status
app = FastAPI()
# taskserve's ready endpoints (submit, status, get, cancel, retry, dead letters) under /tasks
app.include_router(task_router(processor_config, task_names=["index_document"]), prefix="/tasks")


@serve.deployment
@serve.ingress(app)
class API:
    def __init__(self, consumer_handle, task_processor_config: TaskProcessorConfig):
        # Keep a reference to the consumer to include it in the application graph
        self.consumer = consumer_handle
        self.adapter = instantiate_adapter_from_config(task_processor_config=task_processor_config)

    @app.post("/submit")
    async def submit(self, request: Request):
        data = await request.json()
        # Enqueue synchronously; returns TaskResult containing ID
        task: TaskResult = self.adapter.enqueue_task_sync(task_name="index_document", kwargs=data)
        return {"task_id": task.id}

    @app.get("/status/{task_id}")
    async def status(self, task_id: str):
        # Synchronously fetch current status or result
        return self.adapter.get_task_status_sync(task_id)


# 5) Build and run the application
consumer = DocumentIndexingConsumer.bind()
app_graph = API.bind(consumer, processor_config)

if __name__ == "__main__":
    # The guide's replicas ask for a CPU each, three in all: start a Ray that
    # holds them (example_ray.py), then run the application as the guide does.
    import os

    import ray
    from example_ray import start_ray

    start_ray("document_indexing.py", DocumentIndexingConsumer, API, log_to_driver=True)
    port = int(os.environ.get("TASKSERVE_EXAMPLE_PORT", "8000"))
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(app_graph)
    print(
        f"Document indexing is running: POST http://127.0.0.1:{port}/submit; Ctrl-C stops it.",
        flush=True,
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        # Replicas stop gracefully (consumers drain); then Ray stops, Serve with it.
        serve.delete("default")
        ray.shutdown()
