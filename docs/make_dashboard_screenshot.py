"""Make docs/dashboard.png: the real dashboard page, served by uvicorn on the
sqlite adapter, with tasks in several states and a dead letter, photographed
by headless Chromium (Debian's, see scripts/ensure_browser.sh).

    .venv/bin/python docs/make_dashboard_screenshot.py [--output docs/dashboard.png]
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import threading
from pathlib import Path

import uvicorn
from playwright.sync_api import expect, sync_playwright

from taskserve import (
    NonRetryableError,
    TaskProcessorConfig,
    TaskState,
    current_task,
    instantiate_adapter_from_config,
)
from taskserve.http import HttpSettings, create_task_app

# The browser, and its flags, of the dashboard's tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core" / "tests"))
from test_dashboard_browser import launch_chromium

TOKEN = "screenshot-token"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path(__file__).with_name("dashboard.png"))
    output: Path = parser.parse_args().output
    workdir = Path(tempfile.mkdtemp(prefix="taskserve-dashboard-"))
    config = TaskProcessorConfig(
        queue_name="document_indexing_queue",
        adapter_config={"path": str(workdir / "tasks.db"), "poll_interval_s": 0.05},
        max_retries=0,
        consumer_concurrency=2,
        failed_task_queue_name="doc_failed",
        unprocessable_task_queue_name="doc_unprocessable",
    )
    release = threading.Event()

    def index_document(document_id: str, document_url: str) -> dict[str, str]:
        if document_id == "report-2026":
            current_task().report_progress(0.4, "page 12 of 30")
            release.wait(120)
        return {"document_id": document_id, "status": "indexed"}

    def fetch_document(document_url: str) -> None:
        raise NonRetryableError(f"404 Not Found: {document_url}")

    consumer = instantiate_adapter_from_config(config)
    consumer.register_task_handle(index_document)
    consumer.register_task_handle(fetch_document)
    consumer.start_consumer()

    app = create_task_app(config, dashboard=True, settings=HttpSettings(admin_token=TOKEN))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        for n in range(1, 4):
            consumer.enqueue_task_sync(
                "index_document", [f"doc-{n}", f"https://example.com/doc-{n}.pdf"]
            )
        running = consumer.enqueue_task_sync(
            "index_document", ["report-2026", "https://example.com/report-2026.pdf"]
        )
        broken = consumer.enqueue_task_sync("fetch_document", ["https://example.com/gone.pdf"])
        for n in range(4, 6):
            consumer.enqueue_task_sync(
                "index_document", [f"doc-{n}", f"https://example.com/doc-{n}.pdf"], delay_s=3600
            )
        late = consumer.enqueue_task_sync(
            "index_document", ["doc-old", "https://example.com/old.pdf"], delay_s=3600
        )
        consumer.cancel_task_sync(late.id)

        with sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"http://127.0.0.1:{sock.getsockname()[1]}/dashboard/")
            page.fill("#token-input", TOKEN)
            page.click("#token-form button[type=submit]")
            rows = page.locator("#tasks-table tbody tr")
            expect(rows).to_have_count(8, timeout=15_000)
            expect(page.locator(f'tr[data-task-id="{running.id}"]')).to_contain_text(
                "page 12 of 30", timeout=15_000
            )
            expect(page.locator(f'tr[data-task-id="{broken.id}"] .status')).to_have_text(
                TaskState.FAILURE.value, timeout=15_000
            )
            expect(page.locator("#dead-letters-table tbody tr")).to_have_count(1, timeout=15_000)
            expect(page.locator("#fig-rate")).to_have_text("5", timeout=15_000)
            page.locator("#dead-letters-table tbody tr button", has_text="View").click()
            expect(page.locator("#dead-letter-detail")).to_be_visible()
            page.screenshot(path=str(output), full_page=True)
            browser.close()
    finally:
        release.set()
        server.should_exit = True
        thread.join(10)
        consumer.shutdown()
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
