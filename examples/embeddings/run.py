"""Embeds 64 documents through batched queued tasks, then answers a nearest-neighbour query.

Starts a local Ray sized for the application's two replicas
(``example_ray.py``) and Serve, runs ``service.app`` (a batched embedding
consumer and taskserve's HTTP ingress), submits every document of
``documents.py`` over HTTP (16 at a time) plus one task without a text,
waits for all, and prints how many handler calls embedded them and the batch
sizes those calls had. Then it embeds a question the same way and prints
the documents nearest to it. Exit status 0 when every document was
embedded to a unit vector, the task without a text failed alone, and the
nearest document has the question's topic::

    python examples/embeddings/run.py

Serve listens on port ``TASKSERVE_EXAMPLE_PORT`` (default: a free one).
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
FOLDERS = [str(HERE), str(HERE.parent)]  # service.py, documents.py; example_*.py
sys.path[:0] = FOLDERS
# The replicas import service.py and example_config.py too: a local Ray's workers
# get this process's environment.
os.environ["PYTHONPATH"] = os.pathsep.join(
    [*FOLDERS, *filter(None, [os.environ.get("PYTHONPATH")])]
)

TASK_TIMEOUT_S = 120.0
"""Longest wait for one task to end."""
SUBMITTERS = 16
"""Client threads submitting the documents."""


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def batch_sizes(results: list[dict[str, Any]]) -> list[int]:
    """The size of each handler call that embedded ``results``, largest first."""
    calls = {result["call"]: result["batch_size"] for result in results}
    return sorted(calls.values(), reverse=True)


def main() -> int:
    """Run the example; return the exit status."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    work = Path(tempfile.mkdtemp(prefix="taskserve-embeddings-"))
    os.environ.setdefault("TASKSERVE_EXAMPLE_SQLITE_PATH", str(work / "tasks.db"))
    import numpy as np
    from documents import QUERY, documents
    from example_config import describe
    from example_ray import start_ray, stop_ray
    from ray import serve
    from service import Embedder, EmbeddingAPI, app

    from taskserve.client import TaskClient, TaskFailed

    port = int(os.environ.get("TASKSERVE_EXAMPLE_PORT") or free_port())
    print(f"taskserve embeddings: queue engine {describe()}")
    print("starting Ray and Serve ...", flush=True)
    start_ray("embeddings/run.py", Embedder, EmbeddingAPI)
    try:
        serve.start(
            http_options={"host": "127.0.0.1", "port": port},
            logging_config={"log_level": "WARNING"},
        )
        serve.run(app, name="embeddings", route_prefix="/")
        corpus = documents()
        with TaskClient(f"http://127.0.0.1:{port}") as client:
            with ThreadPoolExecutor(SUBMITTERS) as pool:
                handles = list(
                    pool.map(lambda doc: client.submit("embed", kwargs={"text": doc[1]}), corpus)
                )
            no_text = client.submit("embed", kwargs={"title": "no text"})
            print(f"submitted {len(handles)} documents and one task without a text", flush=True)
            results = [handle.result(timeout=TASK_TIMEOUT_S) for handle in handles]
            try:
                no_text.result(timeout=TASK_TIMEOUT_S)
                failed_alone = False
            except TaskFailed as e:
                failed_alone = e.error is not None and "embed takes text=" in e.error.message
                print(f"the task without a text failed alone: {e.error and e.error.message}")
            sizes = batch_sizes(results)
            print(
                f"embedded {len(results)} documents in {len(sizes)} handler calls; "
                f"batch sizes: {', '.join(map(str, sizes))}"
            )
            matrix = np.array([result["vector"] for result in results])
            unit = bool(np.allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-4))
            question, topic = QUERY
            answer = client.submit("embed", kwargs={"text": question}).result(TASK_TIMEOUT_S)
        scores = matrix @ np.array(answer["vector"])
        print(f'\nnearest documents to "{question}":')
        nearest = [int(i) for i in np.argsort(-scores)[:3]]
        for index in nearest:
            print(f"  {scores[index]:.3f}  [{corpus[index][0]}] {corpus[index][1]}")
        found = corpus[nearest[0]][0] == topic
        print(f"\n{matrix.shape[1]}-dimension unit vectors: {'yes' if unit else 'no'}")
        return 0 if unit and failed_alone and found else 1
    finally:
        print("\nshutting down ...", flush=True)
        stop_ray("embeddings")


if __name__ == "__main__":
    sys.exit(main())
