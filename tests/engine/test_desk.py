"""The agent desktop in a real browser (Debian's chromium driven by Playwright), against
the real HTTP front, the real gRPC service and Redis. Leaves a screenshot in
test-artifacts/agent-desktop.png."""

from __future__ import annotations

import hashlib
import http.client
import http.cookiejar
import json
import shutil
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from playwright.sync_api import expect, sync_playwright

from arbiter.v1 import common_pb2, decision_pb2, profile_pb2
from engine.clients.desk import DeskServer, SignInLinks
from engine.settings import ClientSettings, DeskSettings
from feature_store.embedded import EmbeddedRedis
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
    running = DeskServer(DeskSettings(port=0), client).start()
    yield running
    running.stop()


class Browser:
    """A plain HTTP client with a cookie jar: what a script on another page, or an agent's
    browser without JavaScript, can send."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )

    def send(
        self, path: str, body: object = None, **headers: str
    ) -> tuple[int, dict[str, str], Any]:
        data = (
            None
            if body is None
            else (body if isinstance(body, bytes) else json.dumps(body).encode())
        )
        request = urllib.request.Request(self.base + path, data=data, headers=headers)
        try:
            with self.opener.open(request, timeout=5) as response:
                raw = response.read()
                status, got = response.status, {k.lower(): v for k, v in response.headers.items()}
        except urllib.error.HTTPError as error:
            raw, status = error.read(), error.code
            got = {k.lower(): v for k, v in error.headers.items()}
            error.close()
        try:
            return status, got, json.loads(raw)
        except ValueError:
            return status, got, raw.decode(errors="replace")


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "chromium is not installed: `make test` installs it (apt-get install chromium)"
    return path


def event(server: ServerThread, event_type: str, **attributes: str) -> None:
    """An event of cust-000042's on the web."""
    server.profiles.RecordEvent(
        profile_pb2.RecordEventRequest(
            customer_id="cust-000042",
            channel=common_pb2.CHANNEL_WEB,
            event_type=event_type,
            attributes=attributes,
        ),
        timeout=5,
    )


def test_agent_sees_the_customer_and_records_an_answer(
    desk: DeskServer, server: ServerThread
) -> None:
    event(server, "product_view", category="fibre")
    # This week's text counts against the marketing budget the desk shows.
    event(server, "opt_in", channel="sms")
    text = decision_pb2.DecideRequest(customer_id="cust-000042", channel=common_pb2.CHANNEL_SMS)
    assert server.decisions.Decide(text, timeout=5).actions
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        # the one-time link the desk printed, naming the customer: kept across sign-in
        page.goto(desk.sign_in_url + "&customer=cust-000042")
        expect(page.locator("#customer")).to_have_value("cust-000042")
        assert "token" not in page.url

        first = page.locator(".action").first
        expect(first).to_be_visible(timeout=10_000)
        offer = first.get_attribute("data-offer")
        assert offer
        expect(page.locator("body")).not_to_contain_text("Degraded answer")
        assert first.locator(".script").inner_text().strip()  # what the agent says
        expect(page.locator("#activity")).to_contain_text("web: product_view (fibre)")
        expect(first).to_contain_text("viewed fibre pages 1 times today")
        page.screenshot(path=str(ARTIFACTS / "agent-desktop-before.png"), full_page=True)

        # Something left in the basket meanwhile: the demo's reminder waits half an hour,
        # and the page shows it once it reloads the customer after the answer.
        event(server, "add_to_cart", category="phones")
        first.locator("button.accept").click()

        expect(page.locator(f'.action[data-offer="{offer}"]')).to_have_count(0, timeout=10_000)
        # the confirmation stays once the page has reloaded the customer
        expect(page.locator("#status")).to_contain_text(f"recorded: {offer} accept")
        page.wait_for_timeout(500)
        expect(page.locator("#status")).to_contain_text(f"recorded: {offer} accept")
        # offers made: a line an offer, with its latest answer
        made = page.locator(f'#offers-made li[data-offer="{offer}"]')
        expect(made).to_have_count(1)
        expect(made).to_contain_text("on call center")
        expect(made).to_contain_text("latest answer: accept")
        expect(page.locator("#policy-state")).to_contain_text("email: opted in (profile)")
        expect(page.locator("#policy-state")).to_contain_text("not offered again")
        expect(page.locator("#policy-state")).to_contain_text(
            "marketing budget (email, sms): 1 of 4 per 7 days"
        )
        expect(page.locator("#pending-triggers")).to_contain_text("basket_reminder · ")
        expect(page.locator("#pending-triggers")).to_contain_text("(after add_to_cart)")
        page.screenshot(path=str(ARTIFACTS / "agent-desktop.png"), full_page=True)
        browser.close()


def test_the_desk_is_not_an_open_door(desk: DeskServer, server: ServerThread) -> None:
    base = f"http://127.0.0.1:{desk.port}"
    stranger = Browser(base)
    for path in ("/", "/api/profile?customer_id=cust-000042", "/api/session"):
        status, headers, _ = stranger.send(path)
        assert status == 401, path
        assert headers["x-frame-options"] == "DENY"
        assert headers["x-content-type-options"] == "nosniff"
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
    status, headers, page = stranger.send("/")
    assert headers["content-type"].startswith("text/html") and "Not signed in" in page
    assert stranger.send("/?token=guessed")[0] == 401
    # DNS rebinding: a page on evil.example resolving to 127.0.0.1 sends its own Host
    status, headers, _ = stranger.send("/", Host="evil.example")
    assert status == 400
    assert headers["x-frame-options"] == "DENY"  # the refusal carries the headers too
    assert "default-src 'none'" in headers["content-security-policy"]

    # the sign-in's redirect carries them too (read as is, not followed)
    connection = http.client.HTTPConnection("127.0.0.1", desk.port, timeout=5)
    connection.request("GET", desk.sign_in_url.removeprefix(base))
    redirect = connection.getresponse()
    assert redirect.status == 303, redirect.status
    assert redirect.getheader("x-frame-options") == "DENY"
    assert redirect.getheader("x-content-type-options") == "nosniff"
    assert "frame-ancestors 'none'" in (redirect.getheader("content-security-policy") or "")
    connection.close()

    # One time only: the link that signed in above signs nobody in again, with a page
    used = desk.sign_in_url.removeprefix(base)
    assert Browser(base).send(used)[0] == 200
    status, headers, page = Browser(base).send(used)
    assert status == 401 and "each works once" in page
    assert headers["content-type"].startswith("text/html")
    # the next link (printed in the desk's terminal) signs in, keeping the customer
    connection = http.client.HTTPConnection("127.0.0.1", desk.port, timeout=5)
    connection.request("GET", desk.sign_in_url.removeprefix(base) + "&customer=cust-000042")
    redirect = connection.getresponse()
    assert redirect.status == 303 and redirect.getheader("location") == "/?customer=cust-000042"
    connection.close()

    agent = Browser(base)
    status, _, _ = agent.send(desk.sign_in_url.removeprefix(base))
    assert status == 200  # redirected to the page, signed in
    status, _, session = agent.send("/api/session")
    assert status == 200 and session["agent"] == "agent"
    status, _, body = agent.send("/api/decide?customer_id=bad%20id")
    assert status == 400 and body["message"].startswith("customer_id")

    decision = agent.send("/api/decide?customer_id=cust-000042")[2]
    outcome = {
        "decision_id": decision["decision_id"],
        "customer_id": "cust-000042",
        "offer_id": decision["actions"][0]["offer_id"],
        "outcome": "decline",
    }
    # a cross-site form post (text/plain, another Origin), even with the agent's cookie
    status, _, _ = agent.send(
        "/api/outcome",
        json.dumps(outcome).encode(),
        **{"Content-Type": "text/plain", "Origin": "http://evil.example"},
    )
    assert status == 403
    assert agent.send("/api/outcome", outcome)[0] == 403  # no CSRF token
    wrong = {"X-CSRF-Token": session["csrf"], "Origin": "http://evil.example"}
    assert agent.send("/api/outcome", outcome, **wrong)[0] == 403
    assert server.read_outcomes() == []

    ok = {"X-CSRF-Token": session["csrf"], "Content-Type": "application/json"}
    status, _, body = agent.send("/api/outcome", outcome, **ok)
    assert status == 200 and body["recorded"]
    (logged,) = server.read_outcomes()
    assert logged["reported_by"] == "agent"  # outcomes record the agent
    status, _, body = agent.send("/api/outcome", {**outcome, "offer_id": "ghost"}, **ok)
    assert status == 404  # the service's answer passes through


def test_with_an_agents_file_agents_sign_in_with_their_secret(
    server: ServerThread, tmp_path: Path
) -> None:
    secret = "correct horse battery staple"
    agents = tmp_path / "agents.toml"
    digest = hashlib.sha256(secret.encode()).hexdigest()
    agents.write_text(f'[[agent]]\nid = "maria"\nsha256 = "{digest}"\n')
    client = ClientSettings(target=f"127.0.0.1:{server.running.port}")
    desk = DeskServer(DeskSettings(port=0, agents_file=agents), client).start()
    try:
        base = f"http://127.0.0.1:{desk.port}"
        browser = Browser(base)
        status, _, page = browser.send("/")
        assert status == 200 and "Sign in" in page  # sent to the sign-in form
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        wrong = urllib.parse.urlencode({"agent": "maria", "secret": "guess"}).encode()
        assert browser.send("/login", wrong, **form)[0] == 401
        right = urllib.parse.urlencode({"agent": "maria", "secret": secret}).encode()
        assert browser.send("/login", right, **form, Origin="http://evil.example")[0] == 403
        assert browser.send("/login", right, **form)[0] == 200
        assert browser.send("/api/session")[2]["agent"] == "maria"
    finally:
        desk.stop()


def test_a_sign_in_link_expires_and_each_use_makes_the_next() -> None:
    printed: list[str] = []
    links = SignInLinks(printed.append, ttl=60)
    first = links.token
    assert links.use("guessed") == "invalid" and printed == []
    assert links.use(first) == "ok"
    assert printed == [links.token] and links.token != first
    assert links.use(first) == "invalid"  # once
    stale = SignInLinks(printed.append, ttl=0)
    old = stale.token
    assert stale.use(old) == "expired" and stale.token != old


def test_with_redis_down_the_agent_still_sees_the_degraded_decision(
    server_factory: Callable[..., ServerThread], tmp_path: Path
) -> None:
    """Redis gone: the decision degrades (fallback offers, a banner saying so) and the
    customer view says it cannot be read, instead of empty panels; a long error fits."""
    own = EmbeddedRedis().start()
    server = server_factory(own.url, breaker_seconds=60)
    own.stop()
    client = ClientSettings(target=f"127.0.0.1:{server.running.port}")
    desk = DeskServer(DeskSettings(port=0), client).start()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(desk.sign_in_url + "&customer=cust-000042")
            expect(page.locator("#degraded")).to_contain_text("Degraded answer", timeout=10_000)
            expect(page.locator(".action").first).to_be_visible()
            expect(page.locator("#profile")).to_contain_text("cannot be read now")
            header = page.locator("header").bounding_box()
            assert header is not None and header["height"] < 120  # the error fits
            page.screenshot(path=str(ARTIFACTS / "agent-desktop-degraded.png"), full_page=True)
            browser.close()
    finally:
        desk.stop()
