"""The dashboard in a real headless Chromium (Playwright driving Debian's
chromium, installed by scripts/ensure_browser.sh): a uvicorn server in a
thread serves the task router under ``/ops`` on the sqlite adapter, and a
consumer runs handlers the test controls. The page follows a task live,
redrives and purges dead letters, shows a refusal without the admin token,
renders hostile names as text, and offers no action when nothing protects
the admin routes. Every wait is one of Playwright's bounded expect() calls."""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI
from playwright.sync_api import Browser, Locator, Page, Playwright, expect, sync_playwright

from taskserve import (
    DeadLetter,
    DeadLetterKind,
    NonRetryableError,
    TaskProcessorAdapter,
    TaskProcessorConfig,
    TaskState,
    instantiate_adapter_from_config,
)
from taskserve.http import HttpSettings, install_error_handlers, task_router
from taskserve_conformance.waiting import wait_for_status, wait_until

pytestmark = pytest.mark.xdist_group("browser")

CHROMIUM = Path("/usr/bin/chromium")
"""Debian's chromium, which scripts/ensure_browser.sh installs."""
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
"""Its flags: no sandbox (containers), no GPU, nothing fetched in the background."""
TOKEN = "dashboard-admin-token"
UI_TIMEOUT_MS = 10_000
STORE_TIMEOUT_S = 10.0
HOSTILE_NAME = '<img src=x onerror="window.__injected = 1">'


@dataclass
class Served:
    """A running dashboard: its page's URL and the queue's consumer adapter."""

    url: str
    adapter: TaskProcessorAdapter
    gate: threading.Event
    calls: dict[str, int] = field(default_factory=dict)

    def dead_letter_of(self, task_id: str) -> DeadLetter:
        """The failed dead letter of ``task_id``, once the consumer wrote it."""
        found: DeadLetter = wait_until(
            lambda: next(
                (r for r in self.adapter.list_dead_letters_sync() if r.task_id == task_id), None
            ),
            STORE_TIMEOUT_S,
            f"task {task_id} was not dead-lettered",
        )
        return found


@contextmanager
def serve_dashboard(tmp_path: Path, settings: HttpSettings) -> Iterator[Served]:
    """The router with its dashboard under ``/ops``, served by uvicorn on a free
    port; the consumer adapter is returned unstarted."""
    queue = f"dash-{uuid.uuid4().hex[:8]}"
    config = TaskProcessorConfig(
        queue_name=queue,
        adapter_config={"path": str(tmp_path / "tasks.db"), "poll_interval_s": 0.01},
        max_retries=0,
        failed_task_queue_name=f"{queue}.failed",
        unprocessable_task_queue_name=f"{queue}.unprocessable",
    )
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(task_router(config, dashboard=True, settings=settings), prefix="/ops")

    gate = threading.Event()
    adapter = instantiate_adapter_from_config(config)
    served = Served("", adapter, gate)

    def gated(label: str) -> str:
        if not gate.wait(30):
            raise RuntimeError("the gate was never opened")
        return label

    def flaky(label: str) -> str:
        served.calls[label] = served.calls.get(label, 0) + 1
        if served.calls[label] == 1:
            raise NonRetryableError(f"first run of {label} fails")
        return label

    def broken(n: int) -> None:
        raise NonRetryableError(f"model file missing for {n}")

    for handler in (gated, flaky, broken):
        adapter.register_task_handle(handler)

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, STORE_TIMEOUT_S, "uvicorn did not start")
        served.url = f"http://127.0.0.1:{port}/ops/dashboard/"
        yield served
    finally:
        gate.set()
        server.should_exit = True
        thread.join(10)
        sock.close()
        adapter.shutdown()


def launch_chromium(playwright: Playwright) -> Browser:
    """:data:`CHROMIUM`, headless with :data:`CHROMIUM_ARGS` (also the browser of
    docs/make_dashboard_screenshot.py); :class:`FileNotFoundError` naming the
    install script if it is missing."""
    if not CHROMIUM.exists():
        raise FileNotFoundError(f"{CHROMIUM} is missing: run scripts/ensure_browser.sh")
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    expect.set_options(timeout=UI_TIMEOUT_MS)
    with sync_playwright() as playwright:
        try:
            launched = launch_chromium(playwright)
        except FileNotFoundError as e:
            pytest.fail(str(e), pytrace=False)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh tab (its own sessionStorage); fails the test on a script error
    or a Content-Security-Policy violation."""
    context = browser.new_context()
    tab = context.new_page()
    problems: list[str] = []
    tab.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    tab.on(
        "console",
        lambda message: (
            problems.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    yield tab
    context.close()
    assert problems == []


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    with serve_dashboard(tmp_path, HttpSettings(admin_token=TOKEN)) as running:
        yield running


def use_token(page: Page, token: str = TOKEN) -> None:
    page.fill("#token-input", token)
    page.click("#token-form button[type=submit]")


def task_status(page: Page, task_id: str) -> Locator:
    return page.locator(f'#tasks-table tr[data-task-id="{task_id}"] .status')


def dead_letter_row(page: Page, record_id: str) -> Locator:
    return page.locator(f'#dead-letters-table tr[data-record-id="{record_id}"]')


def test_a_task_moves_pending_started_success_live(served: Served, page: Page) -> None:
    page.goto(served.url.removesuffix("/"))  # the relative redirect adds the slash
    expect(page).to_have_url(served.url)
    expect(page.locator("#tasks-notice")).to_contain_text("Task list refused (401)")
    use_token(page)
    expect(page.locator("#queue-name")).to_have_text(served.adapter.config.queue_name)
    page.evaluate("window.__sameDocument = true")

    task = served.adapter.enqueue_task_sync("gated", ["<b>first</b>"])
    hostile = served.adapter.enqueue_task_sync(HOSTILE_NAME)
    status = task_status(page, task.id)
    expect(status).to_have_text("PENDING")
    expect(page.locator("#fig-depth")).to_have_text("2")
    served.adapter.start_consumer()
    expect(status).to_have_text("STARTED")
    expect(page.locator("#fig-in-flight")).to_have_text("1")
    served.gate.set()
    expect(status).to_have_text("SUCCESS")
    # The hostile task has no handler: it failed, as unprocessable.
    expect(page.locator("#fig-rate")).to_have_text("2")
    expect(page.locator("#fig-rate-detail")).to_contain_text("1 succeeded, 1 failed")

    hostile_row = page.locator(f'#tasks-table tr[data-task-id="{hostile.id}"]')
    expect(hostile_row).to_contain_text(HOSTILE_NAME)
    expect(page.locator("#tasks-table img")).to_have_count(0)

    page.click(f'#tasks-table tr[data-task-id="{task.id}"] a')
    expect(page.locator("#task-id")).to_have_text(task.id)
    expect(page.locator("#task-fields")).to_contain_text("SUCCESS")
    expect(page.locator("#task-payload")).to_contain_text('"<b>first</b>"')
    expect(page.locator("#task-payload b")).to_have_count(0)
    assert page.evaluate("window.__sameDocument === true && window.__injected === undefined")


def test_a_dead_letter_is_redriven_from_the_page_and_refused_without_the_token(
    served: Served, page: Page
) -> None:
    served.adapter.start_consumer()
    task = served.adapter.enqueue_task_sync("flaky", ["once"])
    record = served.dead_letter_of(task.id)
    page.goto(served.url)
    use_token(page)
    row = dead_letter_row(page, record.id)
    expect(row).to_contain_text("first run of once fails")

    page.click("#token-forget")
    expect(page.locator("#dead-letters-notice")).to_contain_text("Dead letters refused (401)")
    row.get_by_role("button", name="Redrive").click()
    expect(page.locator("#action-result")).to_contain_text(
        "Redrive refused (401): this admin route needs 'Authorization: Bearer <admin token>'"
    )
    assert [r.id for r in served.adapter.list_dead_letters_sync()] == [record.id]

    use_token(page)
    expect(page.locator("#dead-letters-notice")).to_be_hidden()
    row.get_by_role("button", name="Redrive").click()
    new_task = page.locator("#action-result .redriven a")
    expect(new_task).to_have_count(1)
    redriven = wait_for_status(
        served.adapter, new_task.inner_text(), TaskState.SUCCESS, STORE_TIMEOUT_S
    )
    assert redriven.retried_from == task.id
    assert served.adapter.list_dead_letters_sync() == []
    expect(row).to_have_count(0)


def test_dead_letters_are_viewed_and_purged_from_the_page(served: Served, page: Page) -> None:
    served.adapter.start_consumer()
    tasks = [served.adapter.enqueue_task_sync("broken", [n]) for n in range(3)]
    records = [served.dead_letter_of(t.id) for t in tasks]
    page.goto(served.url)
    use_token(page)
    first = dead_letter_row(page, records[0].id)
    first.get_by_role("button", name="View").click()
    expect(page.locator("#dl-detail-error")).to_contain_text("model file missing for 0")
    expect(page.locator("#dl-detail-payload")).to_contain_text('"args": [\n    0\n  ]')

    dead_letter_row(page, records[1].id).get_by_role("link").click()
    expect(page.locator("#task-fields")).to_contain_text("FAILURE")
    expect(page.locator("#task-error-message")).to_have_text("model file missing for 1")
    expect(page.locator("#task-error-hidden")).to_be_visible()
    page.go_back()

    first.get_by_role("button", name="Purge").click()
    expect(page.locator("#action-result")).to_have_text("Purged 1 record.")
    expect(first).to_have_count(0)
    expect(page.locator("#dead-letter-detail")).to_be_hidden()
    left = {r.id for r in served.adapter.list_dead_letters_sync()}
    assert left == {records[1].id, records[2].id}

    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#purge-all")
    expect(page.locator("#action-result")).to_have_text("Purged 2 records.")
    assert served.adapter.list_dead_letters_sync(DeadLetterKind.FAILED) == []
    expect(page.locator("#fig-dl-failed")).to_have_text("0")


def test_without_admin_protection_the_page_is_read_only(tmp_path: Path, page: Page) -> None:
    with serve_dashboard(tmp_path, HttpSettings()) as open_dashboard:
        open_dashboard.adapter.start_consumer()
        task = open_dashboard.adapter.enqueue_task_sync("broken", [7])
        record = open_dashboard.dead_letter_of(task.id)
        page.goto(open_dashboard.url)
        row = dead_letter_row(page, record.id)
        expect(row).to_contain_text("model file missing for 7")
        expect(page.locator("#read-only-note")).to_be_visible()
        expect(page.locator("#token-form")).to_be_hidden()
        expect(page.locator("#bulk-actions")).to_be_hidden()
        expect(row.get_by_role("button")).to_have_text(["View"])
