"""The web console in a real headless browser (Playwright driving the OS's Chromium) against real
processes: a gateway, a processors worker, a Streams sink and the console, on a real broker.

Log in, define a stream to a local receiver, send a Bulk request to the gateway, see the delivery counted
on the page, see a failed batch in the DLQ, pause and resume the stream, redrive the batch and see it
delivered. Chromium comes from the OS (``apt-get install chromium``, done by ``.ci/run``); without it this
test fails and says so.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from cryptography.fernet import Fernet
from playwright.sync_api import Page, expect, sync_playwright

from inflow.config.settings import KafkaSettings
from inflow.local.process import free_port
from tests.console.processes import Component
from tests.processors.workers import WorkerProcess
from tests.streams.endpoint import RecordingEndpoint
from tests.support import wait_for

WS, KEY = "WSBROWSER", "browser-data-api-key"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


@pytest.fixture
def chromium() -> str:
    """The OS's Chromium; a missing browser fails the test (before anything starts) with the command that
    installs it."""
    given = os.environ.get("INFLOW_TEST_CHROMIUM")
    found = given or next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)
    if not found or not Path(found).exists():
        pytest.fail(
            "Chromium is not installed: the console's browser test needs it "
            "(`apt-get update && apt-get install -y chromium`, which .ci/run does; "
            "or set INFLOW_TEST_CHROMIUM to a Chromium executable)"
        )
    return found


@pytest.fixture
def pipeline(catalogue_topics: KafkaSettings, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Gateway, worker, sink and console processes sharing this test's topics and secret key."""
    config = tmp_path / "inflow.yaml"
    config.write_text(yaml.safe_dump({"workspaces": [{"id": WS, "api_key": KEY}]}))
    gateway_port, sink_port, console_port = free_port(), free_port(), free_port()
    token = secrets.token_urlsafe(32)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "S3_", "INFLOW_"))} | {
        "KAFKA_BOOTSTRAP_SERVERS": str(catalogue_topics.bootstrap_servers),
        "KAFKA_TOPIC_PREFIX": catalogue_topics.topic_prefix,
        "INFLOW_HOME": str(tmp_path / "home"),
        "INFLOW_CONFIG": str(config),
        "INFLOW_SECRET_KEY": Fernet.generate_key().decode(),
        "INFLOW_SINK_METRICS_PORT": str(sink_port),
        "INFLOW_CONSOLE_TOKEN": token,
        "INFLOW_CONSOLE_SAMPLE_INTERVAL_S": "1",
        "INFLOW_CONSOLE_COMPONENTS": json.dumps(
            {"gateway": f"http://127.0.0.1:{gateway_port}", "sink": f"http://127.0.0.1:{sink_port}"}
        ),
        "INFLOW_WORKER_LOG_LEVEL": "warn",
        "PYTHONUNBUFFERED": "1",
    }
    started: list[Any] = []
    try:
        gateway = Component.start("gateway", ["gateway", "--port", str(gateway_port)], env, tmp_path)
        started.append(gateway)
        worker = WorkerProcess("w1", env, tmp_path / "worker-data", tmp_path / "worker.log").start()
        started.append(worker)
        sink = Component.start("sink", ["sink"], env, tmp_path)
        started.append(sink)
        console = Component.start("console", ["console", "--port", str(console_port)], env, tmp_path)
        started.append(console)
        gateway_url, console_url = f"http://127.0.0.1:{gateway_port}", f"http://127.0.0.1:{console_port}"
        wait_for(lambda: console.answers(console_url + "/health"), 60, what="the console")
        wait_for(lambda: gateway.answers(gateway_url + "/health"), 60, what="the gateway")
        wait_for(lambda: sink.answers(f"http://127.0.0.1:{sink_port}/metrics"), 60, what="the sink")
        worker.assert_running()
        yield {"gateway": gateway_url, "console": console_url, "token": token, "worker": worker}
    finally:
        # SIGTERM every process first, then wait for each: they stop side by side.
        for component in started:
            if component.proc is not None and component.proc.poll() is None:
                component.proc.send_signal(signal.SIGTERM)
        for component in started:
            if isinstance(component, WorkerProcess):
                if component.proc is not None and component.proc.poll() is None:
                    component.terminate(60)
            else:
                component.stop()


def send_event(gateway: str, customer: str) -> None:
    body = {
        "type": "transition",
        "elements": [{"type": "event", "customer_id": customer, "actions": [{"action": "Purchased"}]}],
    }
    response = requests.post(f"{gateway}/v1/transition/{WS}", json=body, auth=(WS, KEY), timeout=30)
    assert response.status_code == 200, response.text


def snap(page: Page, name: str) -> None:
    """Keep a screenshot when INFLOW_TEST_SCREENSHOTS names a folder (to look at the pages)."""
    folder = os.environ.get("INFLOW_TEST_SCREENSHOTS")
    if folder:
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def reload_until(page: Page, selector: str, timeout: float, what: str) -> None:
    """Reload the page until ``selector`` shows (server-rendered tables are read at each load)."""

    def shown() -> bool:
        page.reload()
        return page.locator(selector).count() > 0

    wait_for(shown, timeout, interval=1.0, what=what)


def test_console_in_a_browser_streams_deliveries_pause_and_dlq_redrive(
    chromium: str, pipeline: dict[str, Any]
) -> None:
    failing = threading.Event()
    receiver = RecordingEndpoint(decide=lambda index, body: 500 if failing.is_set() else 200).start()
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
            page = browser.new_page()
            page.set_default_timeout(30_000)
            base = pipeline["console"]

            page.goto(base + "/")
            expect(page).to_have_url(base + "/login")
            snap(page, "login")
            page.fill("#token", "not-the-token-" + "x" * 30)
            page.click("#login")
            expect(page.locator("#login-error")).to_contain_text("Unknown or revoked")
            page.fill("#token", pipeline["token"])
            page.click("#login")
            expect(page.locator("h1")).to_have_text("Overview")
            expect(page.locator("#me")).to_contain_text("bootstrap (admin)")
            expect(page.locator('#components tr[data-component="gateway"] .status')).to_have_text(
                "up", timeout=30_000
            )

            page.click("text=Streams")
            form = page.locator("#define-stream")
            form.locator('input[name="id"]').fill("s1")
            form.locator('input[name="url"]').fill(receiver.url)
            form.locator('input[name="app_name"]').fill("browser")
            form.locator('input[name="linger_s"]').fill("0.2")
            form.locator('input[name="retry_delays_s"]').fill("")  # a failed batch goes straight to the DLQ
            form.locator("button[type=submit]").click()
            expect(page.locator('[data-stream-state="s1"]')).to_contain_text("running")

            send_event(pipeline["gateway"], "browser-user-1")
            expect(page.locator('[data-stream-delivered="s1"]')).to_have_text("1", timeout=60_000)
            assert len(receiver.delivered_uuids()) == 1
            reload_until(page, '#recent td:text-is("s1")', 30, "the delivery in the recent deliveries table")
            assert receiver.snapshot()[0].body["app_name"] == "browser"

            failing.set()
            send_event(pipeline["gateway"], "browser-user-2")
            reload_until(page, "#dlq tr[data-dlq]", 60, "the failed batch in the DLQ table")
            row = page.locator("#dlq tr[data-dlq]").first
            expect(row).to_contain_text("s1")
            expect(row).to_contain_text("HTTP 500")
            snap(page, "streams")
            failing.clear()

            page.locator('tr[data-stream="s1"] button', has_text="Pause").click()
            expect(page.locator('[data-stream-state="s1"]')).to_contain_text("paused")
            page.locator('tr[data-stream="s1"] button', has_text="Resume").click()
            expect(page.locator('[data-stream-state="s1"]')).to_contain_text("running")

            page.locator("#dlq tr[data-dlq] button", has_text="Redrive").first.click()
            expect(page.locator("#flash")).to_contain_text("redriven (1 batch)")
            expect(page.locator('[data-stream-delivered="s1"]')).to_have_text("2", timeout=60_000)
            assert len(receiver.delivered_uuids()) == 2

            page.click("text=Overview")
            expect(page.locator("#chart polyline")).to_have_count(3)
            snap(page, "overview")
            page.click("text=Audit")
            for action in ("stream.define", "stream.pause", "stream.resume", "dlq.redrive"):
                expect(page.locator("#audit")).to_contain_text(action)
            snap(page, "audit")
            page.click("text=Workspaces")
            expect(page.locator(f'tr[data-workspace="{WS}"]')).to_contain_text("enabled")
            limits = page.locator("#workspace-limits")
            limits.locator('input[name="workspace_id"]').fill(WS)
            limits.locator('input[name="users_per_minute"]').fill("1234")
            limits.locator('input[name="events_per_minute"]').fill("5678")
            limits.locator("button[type=submit]").click()
            expect(page.locator(f'tr[data-workspace="{WS}"]')).to_contain_text("1234")
            created = page.locator("#create-workspace")
            created.locator('input[name="workspace_id"]').fill("WSNEW")
            created.locator("button[type=submit]").click()
            expect(page.locator("#flash")).to_contain_text("data_api_key = ")
            snap(page, "workspaces")
            browser.close()
    finally:
        receiver.stop()
    pipeline["worker"].assert_running()
