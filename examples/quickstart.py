"""Quickstart: the guide's document-indexing app, end to end, with no server to install.

Starts a local Ray and Serve, deploys ``document_indexing.app_graph`` (two
consumer replicas and an HTTP ingress) on the embedded sqlite adapter, submits
a few documents over HTTP, shows their progress, prints the results, then
shuts everything down. Everything stays on this machine.

    python examples/quickstart.py

``TASKSERVE_EXAMPLE_CONFIG=examples/configs/<engine>.yaml`` runs the same app
on an installed plugin instead (see ``example_config.py``).
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import time
from pathlib import Path

DOCUMENTS = {
    "guide": (
        "Asynchronous inference decouples request lifetime from compute time. An HTTP call "
        "enqueues the work and returns a task id at once; consumer deployments run it in the "
        "background while the caller polls the status and fetches the result. "
    )
    * 3,
    "delivery": (
        "A message is acknowledged only after its outcome is recorded. A consumer killed in the "
        "middle of a task loses nothing: the lease runs out and the task is delivered again. "
    )
    * 6,
    "retries": (
        "A handler that always raises runs max retries plus one times, with backoff, and then "
        "its task lands in the failed dead letter queue with its original arguments. "
    )
    * 4,
    "cancel": (
        "Cancelling a pending task is durable: it holds with no consumer online and the "
        "handler never runs. A running async handler is interrupted. "
    )
    * 5,
}


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_documents(folder: Path) -> dict[str, str]:
    """Write the sample documents; return id -> file URL."""
    urls = {}
    for name, text in DOCUMENTS.items():
        path = folder / f"{name}.txt"
        path.write_text(text)
        urls[name] = path.as_uri()
    return urls


def main() -> int:
    """Run the quickstart; return the exit status."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import httpx
    from ray import serve

    from taskserve.client import TaskClient

    work = Path(tempfile.mkdtemp(prefix="taskserve-quickstart-"))
    os.environ.setdefault("TASKSERVE_EXAMPLE_SQLITE_PATH", str(work / "tasks.db"))
    # document_indexing reads the queue's config selected by the environment.
    from document_indexing import API, DocumentIndexingConsumer, app_graph
    from example_config import describe
    from example_ray import start_ray, stop_ray

    port = int(os.environ.get("TASKSERVE_QUICKSTART_PORT") or free_port())
    base = f"http://127.0.0.1:{port}"
    print(f"taskserve quickstart: queue engine {describe()}")
    print("starting Ray and Serve ...", flush=True)
    # A local Ray with a logical CPU for each of the guide's three replicas
    # (or the cluster of RAY_ADDRESS): example_ray.py.
    start_ray(
        "quickstart.py",
        DocumentIndexingConsumer,
        API,
        log_to_driver=os.environ.get("TASKSERVE_QUICKSTART_LOGS") == "1",
    )
    started = time.monotonic()
    try:
        serve.start(
            http_options={"host": "127.0.0.1", "port": port},
            logging_config={"log_level": "WARNING"},
        )
        serve.run(app_graph, name="document-indexing", route_prefix="/")
        print(f"application ready in {time.monotonic() - started:.1f}s at {base}\n")
        urls = write_documents(work)
        with httpx.Client(base_url=base, timeout=30) as http:
            task_ids = {}
            for name, url in urls.items():
                response = http.post("/submit", json={"document_id": name, "document_url": url})
                response.raise_for_status()
                task_ids[name] = response.json()["task_id"]
                print(f"submitted {name:<9} -> task {task_ids[name]}")
            print()
            results = wait_for(http, task_ids)
        print()
        for name, record in results.items():
            if record["status"] != "SUCCESS":
                print(f"{name:<9} {record['status']}: {record.get('error')}")
                continue
            meta = record["result"]["metadata"]
            print(
                f"{name:<9} indexed {meta['words']:>4} words, top terms "
                f"{', '.join(meta['top_terms'])}, fingerprint {meta['fingerprint']}"
            )
        with TaskClient(f"{base}/tasks") as client:
            task = client.submit(
                "index_document",
                kwargs={"document_id": "client", "document_url": urls["guide"]},
            )
            value = task.result(timeout=60)
            last = task.progress()
            reported = f", last progress {last.fraction:.0%} {last.message}" if last else ""
            print(f"\nvia taskserve.client: task {task.id} -> {value['status']}{reported}")
        failed = [name for name, record in results.items() if record["status"] != "SUCCESS"]
        return 1 if failed else 0
    finally:
        print("\nshutting down ...", flush=True)
        stop_ray("document-indexing")


def shown(record: dict) -> str:
    """A task's status, with the progress its handler reported while it runs."""
    progress = record.get("progress")
    if record["status"] == "STARTED" and progress:
        return f"{record['status']} {progress['fraction']:.0%}"
    return record["status"]


def stage(record: dict) -> tuple[str, int]:
    """What a new progress line is printed for: the status, and for a running
    task whether it reported and has passed half-way."""
    progress = record.get("progress") if record["status"] == "STARTED" else None
    return record["status"], -1 if not progress else int(progress["fraction"] >= 0.5)


def wait_for(http, task_ids: dict[str, str], timeout_s: float = 120.0) -> dict[str, dict]:
    """Poll every task until all ended, printing one progress line per stage."""
    deadline = time.monotonic() + timeout_s
    last: list[tuple[str, int]] = []
    while True:
        records = {name: http.get(f"/status/{tid}").json() for name, tid in task_ids.items()}
        line = "  ".join(f"{name}:{shown(record)}" for name, record in records.items())
        stages = [stage(record) for record in records.values()]
        if stages != last:
            done = sum(r["status"] in ("SUCCESS", "FAILURE", "CANCELLED") for r in records.values())
            print(f"[{done}/{len(records)} done] {line}", flush=True)
            last = stages
        if all(r["status"] in ("SUCCESS", "FAILURE", "CANCELLED") for r in records.values()):
            return records
        if time.monotonic() > deadline:
            raise TimeoutError(f"tasks did not finish within {timeout_s}s: {line}")
        time.sleep(0.2)


if __name__ == "__main__":
    sys.exit(main())
