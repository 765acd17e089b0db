"""The agent desktop in a real browser (Debian's chromium driven by Playwright), against
the real HTTP front, the real gRPC service and Redis. Leaves a screenshot in
test-artifacts/agent-desktop.png."""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from playwright.sync_api import expect, sync_playwright

from arbiter.v1 import common_pb2, profile_pb2
from engine.clients.desk import DeskServer
from engine.settings import ClientSettings
from tests.conftest import ServerThread

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def server(
    server_factory: Callable[..., ServerThread], loaded: redis.Redis, redis_url: str
) -> ServerThread:
    """The browser starting beside the server can hold both cores for longer than the
    30 ms read budget, and a degraded answer (defaults, fallback offers) is not what these
    tests are about: the budget is tested in test_degraded.py."""
    return server_factory(redis_url, feature_timeout_ms=2000, reserve_timeout_ms=2000)


@pytest.fixture
def desk(server: ServerThread) -> Iterator[DeskServer]:
    client = ClientSettings(target=f"127.0.0.1:{server.running.port}")
    running = DeskServer("127.0.0.1", 0, client).start()
    yield running
    running.stop()


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "chromium is not installed: `make test` installs it (apt-get install chromium)"
    return path


def test_agent_sees_the_customer_and_records_an_answer(
    desk: DeskServer, server: ServerThread
) -> None:
    server.profiles.RecordEvent(
        profile_pb2.RecordEventRequest(
            customer_id="cust-000042",
            channel=common_pb2.CHANNEL_WEB,
            event_type="product_view",
            attributes={"category": "fibre"},
        ),
        timeout=5,
    )
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"http://127.0.0.1:{desk.port}/")
        page.fill("#customer", "cust-000042")
        page.click("button[type=submit]")

        first = page.locator(".action").first
        expect(first).to_be_visible(timeout=10_000)
        offer = first.get_attribute("data-offer")
        assert offer
        expect(page.locator("body")).not_to_contain_text("Degraded answer")
        assert first.locator(".script").inner_text().strip()  # what the agent says
        expect(page.locator("#activity")).to_contain_text("web: product_view (fibre)")
        expect(first).to_contain_text("viewed fibre pages 1 times today")
        page.screenshot(path=str(ARTIFACTS / "agent-desktop-before.png"), full_page=True)

        first.locator("button.accept").click()

        expect(page.locator("#status")).to_contain_text(f"recorded: {offer} accept")
        expect(page.locator(f'.action[data-offer="{offer}"]')).to_have_count(0, timeout=10_000)
        expect(page.locator("#offers-made")).to_contain_text(f"{offer} on call center: accept")
        page.screenshot(path=str(ARTIFACTS / "agent-desktop.png"), full_page=True)
        browser.close()


def test_the_http_front_passes_errors_through(desk: DeskServer) -> None:
    base = f"http://127.0.0.1:{desk.port}"
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(f"{base}/api/decide?customer_id=bad%20id", timeout=5)
    assert error.value.code == 400
    assert json.loads(error.value.read())["message"].startswith("customer_id")
    error.value.close()
    request = urllib.request.Request(
        f"{base}/api/outcome",
        data=json.dumps(
            {"decision_id": "d", "customer_id": "c1", "offer_id": "ghost", "outcome": "accept"}
        ).encode(),
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=5)
    assert error.value.code == 404
    error.value.close()
